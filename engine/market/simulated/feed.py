"""``SimulatedFeed``: the simulated market streamed through the same :class:`~engine.market.feed.Feed`
interface as the real brokers.

A task on the engine's loop advances :class:`SimulatedMarket` ``tick_hz`` times per wall-clock second
by ``elapsed × speed`` market seconds (×1 … ×10,000), or as fast as possible in fixed market-time
increments (deterministic), and publishes, cache first:

- ``UnderlyingUpdated`` for every underlying every tick;
- ``ChainUpdated`` (conflated) per underlying at ``chain_hz``, and whenever the contract layout changes;
- ``QuotesUpdated`` for subscribed underlyings: the rows whose bid/ask changed since last published,
  nearest the money first, within the ``quotes_per_second`` budget (rows left over stay pending). A
  newly subscribed window is published whole on the next tick, before any other window and even when
  its chain is republished on that tick: at ×1 most quotes move less than a tick for seconds, so
  "changed rows only" would leave a freshly selected expiry without quotes for 6–7 s;
- ``ExDividendAhead`` at the close before an ex-dividend session (drives early assignment);
- ``ClockTicked`` last in every tick (market time, open/closed), so closes and expiries see final prices.

Rows in ``QuotesUpdated`` index the chain of the latest ``ChainUpdated`` for that underlying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from engine.bus import Bus
from engine.bus.events import (
    ChainUpdated,
    ClockTicked,
    ConnectionStateChanged,
    QuotesUpdated,
    UnderlyingUpdated,
)
from engine.bus.messages import Event
from engine.market.config import SimulatorConfig
from engine.market.feed import Feed, FeedError
from engine.market.simulated.market import SimulatedMarket
from engine.model import OptionChain

if TYPE_CHECKING:
    from engine.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketRegimeChanged(Event):
    """The simulated market moved to another regime (calm / volatile / crisis)."""

    severity: ClassVar[str] = "warning"
    regime: str
    previous: str
    market_time: datetime

    def describe(self) -> str:
        return f"Simulated market regime {self.previous} → {self.regime}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExDividendAhead(Event):
    """A dividend goes ex at the next session (published at the close before it)."""

    symbol: str
    amount: float  # per share
    ex_date: date

    def describe(self) -> str:
        return f"{self.symbol} goes ex-dividend ${self.amount:.2f} on {self.ex_date}"


class SimClock:
    """The simulated market's clock (``engine.clock.Clock`` protocol): market time, UTC-aware."""

    def __init__(self, market: SimulatedMarket) -> None:
        self.market = market  # the feed swaps it when the day restarts or the clock jumps

    def now(self) -> datetime:
        return self.market.now


@dataclass
class _Window:
    expiries: tuple[date, ...] | None
    strikes: tuple[float, float] | None


class SimulatedFeed(Feed):
    """The embedded default feed. ``SimulatedFeed.quickstart(bus)`` gives a small, fast universe."""

    name = "simulated"

    STATE_KEY = "simulator.state"

    def __init__(self, bus: Bus, config: SimulatorConfig | None = None, *,
                 start: date | datetime | None = None, market: SimulatedMarket | None = None,
                 store: Store | None = None) -> None:
        """``store``: save the market's state there (every ``SAVE_EVERY_S`` and on stop) and, when no
        ``start`` is given, resume from it — same seed and universe — so a restart continues the path."""
        self.bus = bus
        self.config = config or SimulatorConfig()
        self.store = store
        self.resumed = False
        if market is None and store is not None and start is None:
            market = self._resume(store)
        self.market = market or SimulatedMarket(self.config, start=start)
        self.clock = SimClock(self.market)
        s = self.config.streaming
        self.speed = s.speed
        self.fast = s.fast
        self.paused = False
        self._task: asyncio.Task[None] | None = None
        self._chains: dict[str, OptionChain] = {}
        self._layout: dict[str, tuple[int, int]] = {}
        self._pub_bid: dict[str, np.ndarray] = {}
        self._pub_ask: dict[str, np.ndarray] = {}
        self._windows: dict[str, _Window] = {}
        #: underlyings whose window was (re)selected and has not been published yet
        self._fresh: set[str] = set()
        #: chain rows owed to a window snapshot (pending beyond the budget); cleared by a chain publish
        self._owed: dict[str, np.ndarray] = {}
        self._last_chain_wall: dict[str, float] = {}
        self._regime = self.market.regime
        self.ticks = 0
        self.quotes_published = 0
        self._last_publish_wall: float | None = None
        self._dividends_announced: date | None = None

    SAVE_EVERY_S = 30.0

    def _resume(self, store: Store) -> SimulatedMarket | None:
        state = store.kv.get(self.STATE_KEY)
        if not state:
            return None
        try:
            market = SimulatedMarket.from_state(self.config, state)
        except (ValueError, KeyError, TypeError) as exc:
            log.info("simulated market starts afresh: %s", exc)
            return None
        self.resumed = True
        return market

    def save_state(self) -> None:
        """Persist the market's state (no-op without a store)."""
        if self.store is not None:
            try:
                self.store.kv.set(self.STATE_KEY, self.market.state())
            except Exception:  # saving is best effort: the market keeps running
                log.exception("could not save the simulated market state")

    @classmethod
    def quickstart(cls, bus: Bus, *, symbols: Sequence[str] = ("SPY", "QQQ", "IWM", "AAPL", "SPX", "VIX"),
                   seed: int = 7, start: date | datetime | None = None, speed: float = 1.0,
                   fast: bool = False) -> SimulatedFeed:
        """The default universe (or a subset) with a seed: what the GUI and tests start from."""
        cfg = SimulatorConfig(seed=seed).restricted_to(list(symbols))
        cfg = cfg.model_copy(update={"streaming": cfg.streaming.model_copy(update={"speed": speed, "fast": fast})})
        return cls(bus, cfg, start=start)

    # ---- Feed interface -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._publish_all(force_chains=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="feed:simulated")
        self.bus.publish(ConnectionStateChanged(component="feed:simulated", state="connected",
                                                detail=f"seed {self.config.seed}, ×{self.speed:g}"))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        self.save_state()
        self.bus.publish(ConnectionStateChanged(component="feed:simulated", state="disconnected"))

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    def underlyings(self) -> list[str]:
        return list(self.market.symbols)

    async def expirations(self, underlying: str) -> list[date]:
        self._check(underlying)
        return self.market.expirations(underlying)

    async def chain(self, underlying: str, expiries: Sequence[date] | None = None) -> OptionChain:
        self._check(underlying)
        chain = self.market.chain(underlying)
        if expiries:
            wanted = np.array([np.datetime64(d, "D") for d in expiries])
            chain = chain.take(np.isin(self._expiry_days(chain), wanted))
        return chain

    async def subscribe(self, underlying: str, expiries: Sequence[date] | None = None,
                        strike_window: tuple[float, float] | None = None) -> None:
        self._check(underlying)
        if strike_window is not None and not strike_window[0] <= strike_window[1]:
            raise FeedError(f"strike window {strike_window} must be (low, high) with low <= high")
        self._windows[underlying] = _Window(tuple(expiries) if expiries else None, strike_window)
        self._fresh.add(underlying)

    async def unsubscribe(self, underlying: str) -> None:
        self._windows.pop(underlying, None)
        self._fresh.discard(underlying)
        self._owed.pop(underlying, None)

    def last_chain(self, underlying: str) -> OptionChain | None:
        return self._chains.get(underlying)

    def last_price(self, symbol: str) -> float | None:
        try:
            return self.market.spot(symbol)
        except KeyError:
            return None

    def now(self) -> datetime | None:
        return self.market.now

    def market_open(self) -> bool:
        """Whether the simulated session is open at market time."""
        return self.market.is_open

    # ---- controls -----------------------------------------------------------------------------
    def set_speed(self, speed: float) -> None:
        if not 1.0 <= speed <= 10_000.0:
            raise ValueError(f"speed must be between ×1 and ×10,000, got {speed}")
        self.speed = float(speed)

    def set_fast(self, fast: bool) -> None:
        self.fast = bool(fast)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # ---- moving the clock by command ----------------------------------------------------------
    async def restart_day(self) -> datetime:
        """Back to the open of the current simulated session, replaying its path from the open (the
        dynamics and their random state as they were at the open). Returns the new market time."""
        market = await asyncio.to_thread(self.market.restarted_day)  # rebuilds quotes: off the loop
        self._replace_market(market)
        return market.now

    async def jump_to(self, when: datetime) -> datetime:
        """Start the simulated market afresh (same seed and universe) at the session open at or after
        ``when``; the real-session jump uses it. Returns the new market time."""
        if when.tzinfo is None:
            raise ValueError("the time to jump to must be timezone-aware")
        cal = self.market.calendar
        market = await asyncio.to_thread(SimulatedMarket, self.config, start=when, calendar=cal)
        self._replace_market(market)
        return market.now

    def _replace_market(self, market: SimulatedMarket) -> None:
        self.market = market
        self.clock.market = market
        self._regime = market.regime
        self._dividends_announced = None
        self._publish_all(force_chains=True)  # a new listing: every chain goes out in full
        self.save_state()  # a crash right after the move resumes from the new time

    def _check(self, underlying: str) -> None:
        if underlying not in self.market.symbols:
            raise FeedError(f"{underlying!r} is not in the simulated universe ({', '.join(self.market.symbols)})")

    # ---- streaming ----------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.config.streaming
        last = last_save = loop.time()
        while True:
            if self.store is not None and loop.time() - last_save >= self.SAVE_EVERY_S:
                last_save = loop.time()
                self.save_state()
            if self.fast:
                await asyncio.sleep(0)
                target = self.market.now + timedelta(seconds=60.0)
            else:
                await asyncio.sleep(1.0 / s.tick_hz)
                now = loop.time()
                elapsed, last = now - last, now
                if self.paused:
                    continue
                target = self.market.now + timedelta(seconds=elapsed * self.speed)
            try:
                self.step_to(target)
            except Exception:  # the feed must survive a bad tick; the error is logged and reported
                log.exception("simulated feed tick failed")
                self.bus.publish(ConnectionStateChanged(component="feed:simulated", state="failed",
                                                        detail="tick failed; see log"))
                await asyncio.sleep(1.0)

    def step_to(self, target: datetime) -> None:
        """Advance the market to ``target`` (skipping closed hours if configured) and publish."""
        m = self.market
        s = self.config.streaming
        if s.skip_closed and not m.is_open and m.now >= m.session_close:
            target = max(target, m.calendar.next_open(m.now))
        m.advance_to(target, max_substeps=s.max_substeps)
        self.ticks += 1
        self._publish_all()

    def _publish_all(self, *, force_chains: bool = False) -> None:
        m = self.market
        bus = self.bus
        if m.regime != self._regime:
            bus.publish(MarketRegimeChanged(regime=m.regime, previous=self._regime, market_time=m.now))
            self._regime = m.regime
        wall = time.monotonic()
        chain_period = 1.0 / self.config.streaming.chain_hz
        # the quote budget follows wall time since the last tick (at most half a second's worth)
        rate = self.config.streaming.quotes_per_second
        last = self._last_publish_wall
        since = wall - last if last is not None else 1.0 / self.config.streaming.tick_hz
        budget = rate * min(max(since, 0.0), 0.5)
        spots = m.spots()
        for sym in m.symbols:
            price = spots[sym]
            spec = self.config.underlying(sym)
            if spec.kind in ("index", "vol_index"):
                bus.publish(UnderlyingUpdated(symbol=sym, price=price))
            else:
                bus.publish(UnderlyingUpdated(symbol=sym, price=price, bid=round(price - 0.01, 2),
                                              ask=round(price + 0.01, 2)))
        quoting: list[str] = []
        for sym in m.symbols:
            layout = (m.listing_version, self._live_count(sym))
            # chains of different underlyings are staggered over the period (not all on one tick)
            if sym not in self._last_chain_wall:
                self._last_chain_wall[sym] = wall - chain_period * (1.0 - m.symbols.index(sym) / len(m.symbols))
            due = wall - self._last_chain_wall[sym] >= chain_period
            if force_chains or due or self._layout.get(sym) != layout or self.fast:
                chain = m.chain(sym)
                self._chains[sym] = chain
                self._layout[sym] = layout
                self._pub_bid[sym] = chain.bid.copy()
                self._pub_ask[sym] = chain.ask.copy()
                self._owed.pop(sym, None)  # the chain carries every row: nothing is owed any more
                self._last_chain_wall[sym] = wall
                bus.publish(ChainUpdated(chain=chain))
                if sym in self._fresh:
                    quoting.append(sym)  # a new window still gets its QuotesUpdated on this tick
            elif sym in self._windows:
                quoting.append(sym)
        # a window the trader just selected goes first: its snapshot must not wait behind other windows
        quoting.sort(key=lambda s: s not in self._fresh)
        tried_quotes = False
        for sym in quoting:
            if budget < 1:
                break
            if sym in self._fresh:
                self._fresh.discard(sym)
                self._owed[sym] = self._window_mask(sym)
            tried_quotes = True
            budget -= self._publish_quotes(sym, int(budget))
        if tried_quotes or last is None:
            self._last_publish_wall = wall  # a tick spent on chains carries its quote budget forward
        if not m.is_open and m.now >= m.session_close and self._dividends_announced != m.session:
            self._dividends_announced = m.session
            nxt = m.calendar.next_session(m.session)
            for sym, amount in m.ex_dividends(nxt).items():
                bus.publish(ExDividendAhead(symbol=sym, amount=amount, ex_date=nxt))
        # the clock last: when a subscriber sees the time (a close, an expiry) the prices are already there
        bus.publish(ClockTicked(now=m.now, market_open=m.is_open))

    def _live_count(self, sym: str) -> int:
        m = self.market
        a, b = m.listing.slices[m.symbols.index(sym)]
        now64 = np.datetime64(m.now.replace(tzinfo=None), "s")
        return int(np.count_nonzero(m.listing.expiry[a:b] > now64))

    def _publish_quotes(self, sym: str, budget: int) -> int:
        """Publish changed rows of ``sym`` (nearest the money first, at most ``budget``); returns how many."""
        if budget <= 0:
            return 0
        m = self.market
        chain = self._chains[sym]
        a, b = m.listing.slices[m.symbols.index(sym)]
        now64 = np.datetime64(m.now.replace(tzinfo=None), "s")
        live = m.listing.expiry[a:b] > now64
        bid = m.quotes.bid[a:b][live]
        ask = m.quotes.ask[a:b][live]
        pb, pa = self._pub_bid[sym], self._pub_ask[sym]
        changed = (bid != pb) | (ask != pa)
        owed = self._owed.get(sym)
        if owed is not None:
            changed |= owed
        changed &= self._window_mask(sym)
        rows = np.nonzero(changed)[0]
        if len(rows) == 0:
            self._owed.pop(sym, None)
            return 0
        if len(rows) > budget:
            order = np.argsort(np.abs(chain.strike[rows] - m.spot(sym)), kind="stable")
            rows = np.sort(rows[order[:budget]])
        pb[rows] = bid[rows]
        pa[rows] = ask[rows]
        if owed is not None:
            owed[rows] = False
            if not owed.any():
                del self._owed[sym]
        self.bus.publish(QuotesUpdated(underlying=sym, rows=rows, bid=bid[rows].copy(), ask=ask[rows].copy()))
        self.quotes_published += len(rows)
        return len(rows)

    def _window_mask(self, sym: str) -> np.ndarray:
        """Rows of the last published chain of ``sym`` inside its subscribed window."""
        chain = self._chains[sym]
        inside = np.ones(len(chain.strike), dtype=bool)
        win = self._windows[sym]
        if win.strikes is not None:
            inside &= (chain.strike >= win.strikes[0]) & (chain.strike <= win.strikes[1])
        if win.expiries is not None:
            wanted = np.array([np.datetime64(d, "D") for d in win.expiries])
            inside &= np.isin(self._expiry_days(chain), wanted)
        return inside

    @staticmethod
    def _expiry_days(chain: OptionChain) -> np.ndarray:
        # expiry instants are UTC; New York dates are the UTC date for 09:30 and 16:00 expiries
        return chain.expiry.astype("datetime64[D]")
