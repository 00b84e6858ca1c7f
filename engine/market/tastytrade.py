"""tastytrade market data: nested option chains over REST, quotes and Greeks over DXLink.

- Chains come from ``NestedOptionChain`` (expirations → strikes → OCC + streamer symbols).
- Only the **visible window** of a chain is streamed: :meth:`TastytradeFeed.subscribe` diffs the new
  window against the old one and sends add/remove subscriptions in chunks (a too-large DXLink message
  closes the socket with 1009).
- Vendor Greeks (``Greeks`` events: IV, delta, gamma, theta, vega) land in the chain's ``vendor_*``
  columns; rows without them stay NaN and analytics use our own model.
- The DXLink session runs in a supervisor task: when the server closes it, the task reconnects with
  backoff + jitter and resubscribes every symbol (fresh quote token each time).
- Cache first, then publish: the chain snapshot is replaced before ``QuotesUpdated``/``ChainUpdated``.

In paper mode this feed drives the simulated exchange, so a tastytrade user can paper-trade on real quotes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.brokers.resilience import (
    backoff_delays,
    run_until_stopped,
    sleep_or_stop,
    stop_supervisor,
    with_timeout,
)
from engine.bus.events import ChainUpdated, ConnectionStateChanged, QuotesUpdated, UnderlyingUpdated
from engine.market.earnings import EarningsCalendar
from engine.market.feed import Feed, FeedError, empty_streamed_columns, streamed_snapshot, window_mask
from engine.market.symbols import SymbolMatch, check_search, rank_matches
from engine.model import ExerciseStyle, Option, OptionChain, Settlement

if TYPE_CHECKING:
    from engine.brokers.tastytrade import TastytradeConnection
    from engine.bus import Bus

log = logging.getLogger(__name__)
COMPONENT = "feed:tastytrade"
CASH_SETTLED_INDEXES = frozenset({"SPX", "SPXW", "XSP", "NDX", "NDXP", "RUT", "RUTW", "VIX", "VIXW", "DJX"})


@dataclass
class _ChainState:
    """Mutable quote columns behind the immutable snapshots we publish."""

    base: OptionChain
    streamer: np.ndarray  # streamer symbol per row
    row_of: dict[str, int]
    cols: dict[str, np.ndarray] = field(default_factory=dict)
    window: set[str] = field(default_factory=set)

    def snapshot(self, spot: float, now: datetime) -> OptionChain:
        return streamed_snapshot(self.base, self.cols, spot, now)


#: DXLink event types streamed for each option in the visible window
_OPTION_EVENTS = ("Quote", "Greeks", "Trade", "Summary")


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _event_classes() -> list[Any]:
    from tastytrade import dxfeed

    return [getattr(dxfeed, n) for n in _OPTION_EVENTS]


class TastytradeFeed(Feed):
    name = "tastytrade"

    def __init__(self, connection: TastytradeConnection, bus: Bus, *, underlyings: Sequence[str] = ("SPY",),
                 rng: random.Random | None = None) -> None:
        self.conn = connection
        self.bus = bus
        self.clock = bus.clock  # the engine's (live: the wall clock); stamps snapshots the broker sends untimed
        self._underlyings = [u.upper() for u in underlyings]
        self._states: dict[str, _ChainState] = {}
        self._chains: dict[str, OptionChain] = {}
        self._nested: dict[str, list[Any]] = {}
        self._prices: dict[str, float] = {}
        self._quoted_underlyings: set[str] = set()
        self._streamer: Any = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._rng = rng or random.Random()
        self._sub_lock = asyncio.Lock()
        self.connects = 0
        self.quotes_received = 0
        self.malformed = 0
        #: next earnings dates from tastytrade's market metrics (``earnings.expected-report-date``)
        self.earnings = EarningsCalendar(self._fetch_earnings, self.clock)

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._streamer is not None

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stop = asyncio.Event()
        await self.conn.connect()
        await asyncio.get_running_loop().run_in_executor(None, _warm_up_event_schemas)
        self._ready.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tastytrade:dxlink")
        await with_timeout(self._ready.wait(), self.conn.config.call_timeout_s, "tastytrade DXLink connect")
        self.earnings.bind(asyncio.get_running_loop())
        for u in self._underlyings:
            self.earnings.next(u)  # queue the feed's own symbols: one batched fetch in the background

    async def stop(self) -> None:
        await self.earnings.close()
        task, self._task = self._task, None
        await stop_supervisor(task, self._stop)
        self._streamer = None
        self._ready.clear()

    def _publish_state(self, state: str, detail: str = "") -> None:
        self.bus.publish(ConnectionStateChanged(component=COMPONENT, state=state, detail=detail))

    async def _run(self) -> None:
        from tastytrade import DXLinkStreamer

        cfg = self.conn.reconnect_config
        delays = backoff_delays(cfg.initial_delay_s, cfg.max_delay_s, cfg.multiplier, cfg.jitter, self._rng)
        stop = self._stop
        while not stop.is_set():
            try:
                self._publish_state("connecting")
                async with DXLinkStreamer(self.conn.session) as st:
                    self._streamer = st
                    self.connects += 1
                    await self._resubscribe(st)
                    self._ready.set()
                    self._publish_state("connected", f"DXLink session {self.connects}")
                    delays = backoff_delays(cfg.initial_delay_s, cfg.max_delay_s, cfg.multiplier, cfg.jitter,
                                            self._rng)
                    await self._pump(st)
            except asyncio.CancelledError:
                if stop.is_set() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                log.warning("tastytrade DXLink stream cancelled by a stream failure; reconnecting")
            except Exception as exc:  # the SDK's stream raises anything on a dropped socket: reconnect unless stopping
                if stop.is_set():
                    return
                self.malformed += _count_decode_errors(exc)
                log.warning("tastytrade DXLink stream failed (%s); reconnecting", _flatten(exc))
            self._streamer = None
            self._ready.clear()
            if stop.is_set():
                return
            self._publish_state("disconnected", "DXLink lost; reconnecting")
            if await sleep_or_stop(next(delays), stop):
                return

    async def _pump(self, st: Any) -> None:
        from tastytrade.dxfeed import Greeks, Quote, Summary, Trade

        async def drain(cls: Any, apply: Any) -> None:
            while True:
                first = await st.get_event(cls)
                batch = [first]
                while len(batch) < 5000 and (ev := st.get_event_nowait(cls)) is not None:
                    batch.append(ev)
                try:
                    apply(batch)
                except Exception:  # one bad batch must not end the quote stream
                    log.exception("tastytrade feed: failed to apply %s batch", cls.__name__)

        await run_until_stopped([drain(Quote, self._apply_quotes), drain(Greeks, self._apply_greeks),
                                 drain(Trade, self._apply_trades), drain(Summary, self._apply_summaries)], self._stop)

    # ---- subscriptions --------------------------------------------------------------------------
    async def _send(self, st: Any, cls: Any, symbols: list[str], add: bool) -> None:
        chunk = self.conn.config.subscribe_chunk
        for i in range(0, len(symbols), chunk):
            part = symbols[i:i + chunk]
            if add:
                await with_timeout(st.subscribe(cls, part), self.conn.config.call_timeout_s, "DXLink subscribe")
            else:
                await with_timeout(st.unsubscribe(cls, part), self.conn.config.call_timeout_s, "DXLink unsubscribe")

    async def _resubscribe(self, st: Any) -> None:
        from tastytrade.dxfeed import Quote

        unders = sorted(set(self._underlyings) | self._quoted_underlyings)
        await self._send(st, Quote, unders, True)
        opts = sorted(set().union(*(s.window for s in self._states.values()))) if self._states else []
        if opts:
            for cls in _event_classes():
                await self._send(st, cls, opts, True)

    async def subscribe(self, underlying: str, expiries: Sequence[date] | None = None,
                        strike_window: tuple[float, float] | None = None) -> None:
        """Stream the visible window (expiries × strikes in ``strike_window``); replaces the previous one."""
        from tastytrade.dxfeed import Quote

        underlying = underlying.upper()
        if underlying not in self._states:
            await self.chain(underlying)
        state = self._states[underlying]
        base = state.base
        mask = window_mask(base, expiries, strike_window)
        new = set(state.streamer[mask].tolist())
        async with self._sub_lock:
            added, removed = sorted(new - state.window), sorted(state.window - new)
            state.window = new
            self._quoted_underlyings.add(underlying)
            st = self._streamer
            if st is None:
                return  # applied on (re)connect
            if underlying not in self._prices:
                await self._send(st, Quote, [underlying], True)
            if removed:
                self._clear(underlying, removed)
                for cls in _event_classes():
                    await self._send(st, cls, removed, False)
            if added:
                for cls in _event_classes():
                    await self._send(st, cls, added, True)

    async def unsubscribe(self, underlying: str) -> None:
        state = self._states.get(underlying.upper())
        if state is None or not state.window:
            return
        async with self._sub_lock:
            removed, state.window = sorted(state.window), set()
            self._clear(underlying.upper(), removed)
            if self._streamer is not None:
                for cls in _event_classes():
                    await self._send(self._streamer, cls, removed, False)

    def _clear(self, underlying: str, streamer_symbols: list[str]) -> None:
        """Rows that left the window lose their quotes (NaN): no longer live, never shown as current."""
        state = self._states[underlying]
        idx = np.asarray([state.row_of[s] for s in streamer_symbols if s in state.row_of], dtype=int)
        if len(idx):
            for col in state.cols.values():
                col[idx] = np.nan
            self._chains[underlying] = state.snapshot(self._prices.get(underlying, math.nan), self.clock.now())

    def subscribed_symbols(self) -> set[str]:
        return set().union(*(s.window for s in self._states.values())) if self._states else set()

    # ---- chains ---------------------------------------------------------------------------------
    def underlyings(self) -> list[str]:
        return list(self._underlyings)

    # ---- symbols and earnings ----------------------------------------------------------------------
    async def search_symbols(self, prefix: str, limit: int = 20) -> list[SymbolMatch]:
        """tastytrade's ``GET /symbols/search/{prefix}`` (symbol and description), best matches first."""
        from tastytrade.search import symbol_search

        prefix, limit = check_search(prefix, limit)
        await self.conn.connect()
        session = self.conn.session
        found = await self.conn.call(f"symbol search {prefix}", lambda: symbol_search(session, prefix))
        return rank_matches((SymbolMatch(d.symbol, d.description) for d in found), prefix, limit)

    def next_earnings(self, symbol: str) -> date | None:
        """From tastytrade's market metrics, cached (a first call queues the fetch and answers None)."""
        return self.earnings.next(symbol)

    async def _fetch_earnings(self, symbols: list[str]) -> dict[str, date | None]:
        from tastytrade.metrics import get_market_metrics

        session = self.conn.session
        if session is None:
            raise FeedError("tastytrade: not connected")
        metrics = await self.conn.call("market metrics", lambda: get_market_metrics(session, symbols))
        return {m.symbol.upper(): m.earnings.expected_report_date if m.earnings is not None else None
                for m in metrics}

    async def _nested_chain(self, underlying: str) -> list[Any]:
        if underlying not in self._nested:
            from tastytrade.instruments import NestedOptionChain

            await self.conn.connect()
            session = self.conn.session
            try:
                self._nested[underlying] = await self.conn.call(
                    f"{underlying} chain", lambda: NestedOptionChain.get(session, underlying))
            except Exception as exc:  # the SDK raises httpx, pydantic or its own errors: sorted below into FeedError
                if isinstance(exc, FeedError):
                    raise
                raise FeedError(f"tastytrade: no option chain for {underlying}: {str(exc).strip()}") from exc
        return self._nested[underlying]

    async def expirations(self, underlying: str) -> list[date]:
        nested = await self._nested_chain(underlying.upper())
        return sorted({e.expiration_date for n in nested for e in n.expirations})

    async def chain(self, underlying: str, expiries: Sequence[date] | None = None) -> OptionChain:
        underlying = underlying.upper()
        if underlying not in self._states:
            nested = await self._nested_chain(underlying)
            options: list[Option] = []
            streamer: list[str] = []
            for n in nested:
                mult = int(n.shares_per_contract or 100)
                cash = n.root_symbol.upper() in CASH_SETTLED_INDEXES or underlying in CASH_SETTLED_INDEXES
                for e in n.expirations:
                    am = str(e.settlement_type).upper() == "AM"
                    settlement = (Settlement.CASH_AM if am else Settlement.CASH_PM) if cash else Settlement.PHYSICAL
                    style = ExerciseStyle.EUROPEAN if cash else ExerciseStyle.AMERICAN
                    for k in e.strikes:
                        for sym, ssym in ((k.call, k.call_streamer_symbol), (k.put, k.put_streamer_symbol)):
                            o = Option.from_occ(sym, underlying=underlying, multiplier=mult, style=style,
                                                settlement=settlement)
                            options.append(o)
                            streamer.append(ssym)
            if not options:
                raise FeedError(f"tastytrade: the {underlying} chain is empty")
            by_key = dict(zip([o.key for o in options], streamer, strict=True))
            base = OptionChain.build(underlying, self._prices.get(underlying, math.nan), self.clock.now(), options)
            ss = np.array([by_key[k] for k in base.symbol], dtype=object)
            n_rows = len(base)
            cols = empty_streamed_columns(n_rows)
            state = _ChainState(base, ss, {s: i for i, s in enumerate(ss)}, cols)
            self._states[underlying] = state
            self._chains[underlying] = state.snapshot(self._prices.get(underlying, math.nan), self.clock.now())
        chain = self._chains[underlying]
        if expiries:
            days = np.array([np.datetime64(e, "D") for e in expiries])
            return chain.take(np.isin(chain.expiry.astype("datetime64[D]"), days))
        return chain

    def last_chain(self, underlying: str) -> OptionChain | None:
        return self._chains.get(underlying.upper())

    def last_price(self, symbol: str) -> float | None:
        return self._prices.get(symbol.upper())

    def streamer_symbol(self, underlying: str, occ_key: str) -> str:
        state = self._states[underlying.upper()]
        return str(state.streamer[state.base.row_of(occ_key)])

    # ---- applying events (cache first, then publish) ---------------------------------------------
    def _apply_quotes(self, batch: list[Any]) -> None:
        touched: dict[str, list[int]] = {}
        for q in batch:
            sym = q.event_symbol
            self.quotes_received += 1
            if not sym.startswith("."):
                bid, ask = _num(q.bid_price), _num(q.ask_price)
                mid = 0.5 * (bid + ask) if math.isfinite(bid) and math.isfinite(ask) else math.nan
                if math.isfinite(mid):
                    self._prices[sym] = mid
                    self.bus.publish(UnderlyingUpdated(symbol=sym, price=mid, bid=bid, ask=ask))
                continue
            for u, state in self._states.items():
                row = state.row_of.get(sym)
                if row is not None:
                    c = state.cols
                    c["bid"][row], c["ask"][row] = _num(q.bid_price), _num(q.ask_price)
                    c["bid_size"][row], c["ask_size"][row] = _num(q.bid_size), _num(q.ask_size)
                    touched.setdefault(u, []).append(row)
                    break
        self._publish_rows(touched)

    def _apply_greeks(self, batch: list[Any]) -> None:
        touched: dict[str, list[int]] = {}
        for g in batch:
            for u, state in self._states.items():
                row = state.row_of.get(g.event_symbol)
                if row is not None:
                    c = state.cols
                    c["vendor_iv"][row] = _num(g.volatility)
                    c["vendor_delta"][row] = _num(g.delta)
                    c["vendor_gamma"][row] = _num(g.gamma)
                    c["vendor_theta"][row] = _num(g.theta)
                    c["vendor_vega"][row] = _num(g.vega)
                    touched.setdefault(u, []).append(row)
                    break
        self._publish_rows(touched)

    def _apply_rows(self, batch: list[Any], fields: dict[str, str]) -> None:
        touched: dict[str, list[int]] = {}
        for ev in batch:
            for u, state in self._states.items():
                row = state.row_of.get(ev.event_symbol)
                if row is not None:
                    for col, attr in fields.items():
                        state.cols[col][row] = _num(getattr(ev, attr, None))
                    touched.setdefault(u, []).append(row)
                    break
        self._publish_rows(touched)

    def _apply_trades(self, batch: list[Any]) -> None:
        self._apply_rows(batch, {"last": "price", "volume": "day_volume"})

    def _apply_summaries(self, batch: list[Any]) -> None:
        self._apply_rows(batch, {"open_interest": "open_interest"})

    def _publish_rows(self, touched: dict[str, list[int]]) -> None:
        for u, rows in touched.items():
            state = self._states[u]
            snap = state.snapshot(self._prices.get(u, math.nan), self.clock.now())
            self._chains[u] = snap
            idx = np.unique(np.asarray(rows, dtype=int))
            self.bus.publish(QuotesUpdated(underlying=u, rows=idx, bid=snap.bid[idx], ask=snap.ask[idx]))
            self.bus.publish(ChainUpdated(chain=snap))


def _warm_up_event_schemas() -> None:
    """(In an executor.) The SDK builds each event's JSON schema for FEED_SETUP; the first build is slow."""
    for cls in _event_classes():
        cls.model_json_schema()


def _flatten(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_flatten(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _count_decode_errors(exc: BaseException) -> int:
    if isinstance(exc, BaseExceptionGroup):
        return sum(_count_decode_errors(e) for e in exc.exceptions)
    return 1 if isinstance(exc, ValueError) or type(exc).__name__ == "TastytradeError" else 0
