"""The simulated market: dynamics + listing + quotes on a market clock, synchronous and deterministic.

:class:`SimulatedMarket` is the single object the feed streams from and the history generator
replays. It never sleeps: callers move it with :meth:`advance_to` / :meth:`advance` (market seconds)
and read :meth:`chain` snapshots. Closed periods (nights, weekends, holidays) are one overnight gap:
the market jumps from a session's close to the next open and relists.

Market time of the dynamics runs on a fixed grid of ``step_seconds`` from each session open, so a
path depends only on the seed and the instants it is advanced to; the streaming feed coarsens steps
only when a single tick would exceed ``max_substeps`` (documented).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from engine.clock import WallClock
from engine.market.config import SimulatorConfig
from engine.market.simulated.calendar import MarketCalendar, TradingTimeTable, ex_dividend_date
from engine.market.simulated.dynamics import FactorDynamics, overnight_step_years, session_step_years
from engine.market.simulated.earnings import EarningsSchedule
from engine.market.simulated.listing import Listing, ListingBook
from engine.market.simulated.quoting import QuoteEngine
from engine.model import ExerciseStyle, OptionChain, Settlement
from engine.model.instruments import NEW_YORK

_CAL: dict[tuple[int, int], MarketCalendar] = {}


def market_calendar(start_year: int | None = None, end_year: int | None = None) -> MarketCalendar:
    """A shared :class:`MarketCalendar` (building one takes ~0.5 s, so it is cached). The default span
    is around the real present (wall clock): the calendar must cover today's real sessions whatever
    simulated day a market runs on."""
    now = WallClock().now().year
    key = (start_year or max(2007, now - 19), end_year or now + 3)
    cal = _CAL.get(key)
    if cal is None:
        cal = _CAL[key] = MarketCalendar(*key)
    return cal


def market_calendar_for(d: date, years_after: int = 3) -> MarketCalendar:
    """A shared calendar that covers ``d`` and ``years_after`` years beyond it (listing needs the future)."""
    now = WallClock().now().year
    return market_calendar(min(max(2007, now - 19), d.year), max(now + 3, d.year + years_after))


@dataclass(frozen=True, slots=True)
class SessionMarks:
    """Prices recorded at a session's open and close (AM/PM settlement values)."""

    open: dict[str, float]
    close: dict[str, float]


class SimulatedMarket:
    """Synchronous simulated market. ``now`` is market time (UTC)."""

    def __init__(self, config: SimulatorConfig | None = None, *, start: date | datetime | None = None,
                 calendar: MarketCalendar | None = None, lock_regime: bool = False) -> None:
        self.config = config or SimulatorConfig()
        start_d = _start_date(start, self.config)
        self.calendar = calendar or market_calendar_for(start_d)
        self.dynamics = FactorDynamics(self.config, lock_regime=lock_regime)
        self.earnings = EarningsSchedule.for_config(self.config)
        self.symbols = [u.symbol for u in self.config.universe]
        self._und_index = {s: i for i, s in enumerate(self.symbols)}
        self.listing_book = ListingBook(self.config, self.calendar)
        session = self.calendar.session_on_or_after(start_d)
        self.session = session
        o, c = self.calendar.open_close(session)
        self.session_open, self.session_close = o, c
        self.now = o if not isinstance(start, datetime) else max(o, min(start.astimezone(UTC), c))
        self._stepped_to = self.now  # the dynamics grid position
        self.marks: dict[date, SessionMarks] = {}
        self._record_open()
        self.listing: Listing = self.listing_book.build(session, self.dynamics.spots)
        self.quotes = QuoteEngine(self.config, self.listing, self.config.seed)
        self.version = 0  # bumps whenever quotes change
        self.listing_version = 0  # bumps whenever the contract table changes
        self._last_full: datetime | None = None
        self._full_spots = self.dynamics.spots.copy()
        self._full_var = self.dynamics.v
        self._full_regime = self.dynamics.regime
        self._tt: TradingTimeTable | None = None
        self._force_american = False
        self._reprice(full=True)
        # a market started inside a session replays from that session's open on a restart
        self.day_open_state: dict[str, Any] = {**self.state(with_day_open=False), "now": o.isoformat(),
                                               "stepped_to": o.isoformat()}

    # ---- queries ------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.session_open <= self.now < self.session_close

    def spot(self, symbol: str) -> float:
        return float(self.dynamics.spots[self._index(symbol)])

    def spots(self) -> dict[str, float]:
        s = self.dynamics.spots
        return {sym: float(s[i]) for i, sym in enumerate(self.symbols)}

    @property
    def regime(self) -> str:
        return self.dynamics.regime_name

    def _index(self, symbol: str) -> int:
        try:
            return self._und_index[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not in the simulated universe ({', '.join(self.symbols)})") from None

    def expirations(self, symbol: str) -> list[date]:
        i = self._index(symbol)
        a, b = self.listing.slices[i]
        exp = np.unique(self.listing.expiry[a:b])
        now64 = np.datetime64(self.now.replace(tzinfo=None), "s")
        exp = exp[exp > now64]
        return sorted({e.astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC).astimezone(NEW_YORK).date()
                       for e in exp})

    def chain(self, symbol: str, *, live_only: bool = True) -> OptionChain:
        """The current snapshot of ``symbol``'s options (expired rows dropped when ``live_only``)."""
        i = self._index(symbol)
        a, b = self.listing.slices[i]
        spec = self.config.universe[i]
        lst, q = self.listing, self.quotes
        sl = slice(a, b)
        index: slice | np.ndarray = sl
        if live_only:
            now64 = np.datetime64(self.now.replace(tzinfo=None), "s")
            live = lst.expiry[sl] > now64
            if not live.all():
                index = np.arange(a, b)[live]
        cash = spec.kind in ("index", "vol_index")
        settlement = Settlement.CASH_PM if cash else Settlement.PHYSICAL
        if cash and all(r.settlement == "cash_am" for r in spec.roots):
            settlement = Settlement.CASH_AM
        style = ExerciseStyle.EUROPEAN if all(r.style == "european" for r in spec.roots) else ExerciseStyle.AMERICAN
        mult = spec.roots[0].multiplier
        return OptionChain(
            underlying=symbol,
            spot=float(self.dynamics.spots[i]),
            ts=self.now,
            symbol=lst.symbol[index],
            expiry=lst.expiry[index],
            strike=lst.strike[index],
            is_call=lst.is_call[index],
            bid=q.bid[index].copy(),
            ask=q.ask[index].copy(),
            bid_size=q.bid_size[index].copy(),
            ask_size=q.ask_size[index].copy(),
            last=q.last[index].copy(),
            volume=q.volume[index].copy(),
            open_interest=q.open_interest[index].copy(),
            multiplier=mult,
            style=style,
            settlement=settlement,
            root=spec.roots[0].root,
            vendor={
                "vendor_iv": q.iv[index].copy(), "vendor_delta": q.delta[index].copy(),
                "vendor_gamma": q.gamma[index].copy(), "vendor_theta": q.theta[index].copy(),
                "vendor_vega": q.vega[index].copy(),
            },
        )

    def theo(self, symbol: str) -> np.ndarray:
        """Model values of ``symbol``'s rows (listing order, expired rows included)."""
        a, b = self.listing.slices[self._index(symbol)]
        return self.quotes.theo[a:b].copy()

    def ex_dividends(self, session: date) -> dict[str, float]:
        """Dividends going ex on ``session``: amount per share = yield × spot / 4 (quarterly)."""
        out: dict[str, float] = {}
        for i, spec in enumerate(self.config.universe):
            if spec.dividend_yield <= 0 or session.month not in spec.ex_dividend_months:
                continue
            if ex_dividend_date(self.calendar, session.year, session.month, spec.kind) == session:
                out[spec.symbol] = round(spec.dividend_yield * float(self.dynamics.spots[i]) / 4.0, 2)
        return out

    def settlement_price(self, symbol: str, expiry_instant: datetime) -> float | None:
        """AM-settled: the opening print of that session; PM: its close. None if not reached yet."""
        ny = expiry_instant.astimezone(NEW_YORK)
        marks = self.marks.get(ny.date())
        if marks is None:
            return None
        book = marks.open if ny.hour < 12 else marks.close
        return book.get(symbol)

    # ---- moving time --------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Advance market time by ``seconds`` (wall-clock independent)."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"cannot advance by {seconds!r} seconds")
        self.advance_to(self.now + timedelta(seconds=seconds))

    def advance_to(self, target: datetime, *, max_substeps: int | None = None, reprice: bool = True) -> None:
        """Move market time to ``target``: steps the dynamics, rolls sessions, requotes once at the end."""
        if target.tzinfo is None:
            raise ValueError("target time must be timezone-aware")
        target = target.astimezone(UTC)
        if target <= self.now:
            return
        step = self.config.streaming.step_seconds
        share = self.config.overnight_variance_share
        while self.now < target:
            if self.now >= self.session_close:
                nxt = self.calendar.next_open(self.now)
                if target < nxt:
                    self.now = target
                    break
                self._roll_session(nxt)
                continue
            seg_end = min(target, self.session_close)
            elapsed = (seg_end - self._stepped_to).total_seconds()
            n_full = int(elapsed // step)
            dts: list[float] = [session_step_years(step, share)] * n_full
            moved = n_full * step
            if seg_end == self.session_close and elapsed - moved > 1e-9:
                dts.append(session_step_years(elapsed - moved, share))
                moved = elapsed
            if max_substeps is not None and len(dts) > max_substeps:
                total = sum(dts)
                dts = [total / max_substeps] * max_substeps
            if dts:
                self.dynamics.advance(dts)
                self._stepped_to = self._stepped_to + timedelta(seconds=moved)
            self.now = seg_end
            if self.now >= self.session_close:
                self._stepped_to = self.session_close
                self._record_close()
        if reprice:
            self._reprice()

    def _roll_session(self, next_open: datetime) -> None:
        self.dynamics.advance([overnight_step_years(self.config.overnight_variance_share)])
        new_session = self.calendar.ny_date(next_open)
        for i, jump in self.earnings.gaps_between(self.session, new_session).items():
            self.dynamics.log_s[i] += jump  # the stock gaps at the open after its earnings announcement
        self.session = new_session
        self.session_open, self.session_close = self.calendar.open_close(self.session)
        self.now = self._stepped_to = next_open
        self._record_open()
        self.listing = self.listing_book.build(self.session, self.dynamics.spots)
        self.quotes = QuoteEngine(self.config, self.listing, self.config.seed, previous=self.quotes)
        self.listing_version += 1
        self._last_full = None
        self._tt = None
        self._trim_marks()
        self.day_open_state = self.state(with_day_open=False)

    def _record_open(self) -> None:
        self.marks[self.session] = SessionMarks(open=self.spots(), close={})

    def _record_close(self) -> None:
        m = self.marks.get(self.session)
        self.marks[self.session] = SessionMarks(open=m.open if m else {}, close=self.spots())

    def _trim_marks(self, keep: int = 30) -> None:
        if len(self.marks) > keep:
            for d in sorted(self.marks)[: len(self.marks) - keep]:
                del self.marks[d]

    # ---- quoting ------------------------------------------------------------------------------
    def _reprice(self, *, full: bool = False) -> None:
        dyn = self.dynamics
        spots = dyn.spots
        cfg = self.config
        if not full and self._last_full is not None:
            moved = np.max(np.abs(spots / self._full_spots - 1.0))
            dv = abs(dyn.v / self._full_var - 1.0) if self._full_var > 0 else 1.0
            stale = (self.now - self._last_full).total_seconds() >= cfg.full_reprice_seconds
            full = stale or moved > cfg.full_reprice_move or dv > 4 * cfg.full_reprice_move \
                or dyn.regime != self._full_regime
        else:
            full = True
        now64 = np.datetime64(self.now.replace(tzinfo=None), "s")
        if self._tt is None or self._tt.today != self.session:
            self._tt = self.calendar.trading_time_table(self.session, self.listing.pair_expiry)
        tau = self._tt.years(self.now, self.calendar, 1.0 / (1.0 + cfg.overnight_variance_share))
        if full:
            span = (self.session_close - self.session_open).total_seconds()
            elapsed = min(max((self.now - self.session_open).total_seconds() / span, 0.0), 1.0)
            self.quotes.full(now64, tau, spots, dyn, elapsed, refresh_american=self._force_american)
            self._force_american = False
            self._last_full = self.now
            self._full_spots = spots.copy()
            self._full_var = dyn.v
            self._full_regime = dyn.regime
        else:
            self.quotes.incremental(now64, tau, spots, dyn)
        self.version += 1

    def reprice_full(self) -> None:
        """Reprice every contract from the surface now, early-exercise premiums included (tests, snapshots)."""
        self._force_american = True
        self._reprice(full=True)

    # ---- state --------------------------------------------------------------------------------
    def state(self, *, with_day_open: bool = True) -> dict[str, object]:
        """Enough to resume the same path later (dynamics incl. RNG, clock, listing, session prices), and
        the state at this session's open (``day_open``), so a resumed market can still restart its day."""
        marks = self.marks.get(self.session)
        extra: dict[str, object] = {"day_open": self.day_open_state} if with_day_open else {}
        return {**extra, "fingerprint": config_fingerprint(self.config), "session": self.session.isoformat(),
                "now": self.now.isoformat(), "stepped_to": self._stepped_to.isoformat(),
                "dynamics": self.dynamics.state(), "strikes": self.listing_book.state(),
                "open": dict(marks.open) if marks else {}, "close": dict(marks.close) if marks else {}}

    @classmethod
    def from_state(cls, config: SimulatorConfig, state: dict[str, Any],
                   calendar: MarketCalendar | None = None) -> SimulatedMarket:
        """A market that continues exactly where :meth:`state` was taken (same config required)."""
        if state.get("fingerprint") != config_fingerprint(config):
            raise ValueError("saved simulator state belongs to a different simulator configuration")
        session = date.fromisoformat(str(state["session"]))
        market = cls(config, start=session, calendar=calendar)
        market._restore(state)
        return market

    def _restore(self, state: dict[str, Any]) -> None:
        self.dynamics.restore(state["dynamics"])
        self.listing_book.restore(state["strikes"])
        self.now = datetime.fromisoformat(str(state["now"]))
        self._stepped_to = datetime.fromisoformat(str(state["stepped_to"]))
        opening = {k: float(v) for k, v in dict(state.get("open", {})).items()}
        closing = {k: float(v) for k, v in dict(state.get("close", {})).items()}
        self.marks = {self.session: SessionMarks(open=opening, close=closing)}
        spots = self.dynamics.spots
        open_spots = np.array([opening.get(sym, float(spots[i])) for i, sym in enumerate(self.symbols)])
        self.listing = self.listing_book.build(self.session, open_spots)
        self.quotes = QuoteEngine(self.config, self.listing, self.config.seed)
        self.listing_version += 1
        self._tt = None
        self._last_full = None
        self._reprice(full=True)
        day_open = state.get("day_open")
        self.day_open_state = dict(day_open) if isinstance(day_open, dict) else self.state(with_day_open=False)

    def restarted_day(self) -> SimulatedMarket:
        """A new market at this session's open, on the same path: the day replays from its open."""
        return SimulatedMarket.from_state(self.config, self.day_open_state, calendar=self.calendar)


def config_fingerprint(config: SimulatorConfig) -> str:
    """Identity of a simulated world: everything but the streaming settings (speed may change freely)."""
    import hashlib

    from engine.market.config import StreamingConfig

    body = config.model_copy(update={"streaming": StreamingConfig()}).model_dump_json()
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _start_date(start: date | datetime | None, config: SimulatorConfig) -> date:
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start time must be timezone-aware")
        return start.astimezone(NEW_YORK).date()
    if isinstance(start, date):
        return start
    if config.start:
        try:
            return date.fromisoformat(config.start)
        except ValueError:
            raise ValueError(f"simulator start {config.start!r} is not an ISO date (YYYY-MM-DD)") from None
    return WallClock().now().astimezone(NEW_YORK).date()  # no start configured: today's real date
