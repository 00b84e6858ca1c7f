"""The paper exchange's book and account state: quotes per underlying, working orders, positions and cash.

:class:`ExchangeBook` is the bottom layer of :class:`~engine.brokers.paper_exchange.PaperExchange`: the state every
other part reads (the market's latest quotes from any feed, the account), the lookups from a contract to its row in
a chain, marks, and booking a fill into cash and positions. Validation and buying power
(:mod:`engine.brokers.paper_validation`), matching (:mod:`engine.brokers.paper_matching`) and the session clock with
option settlement (:mod:`engine.brokers.paper_settlement`) build on it, one layer each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import numpy as np

from engine.brokers.fees import FeeSchedule, OrderFeeTracker, fee_schedule
from engine.brokers.paper_config import PaperConfig
from engine.market.simulated.ticks import tick_for
from engine.model import Fill, Instrument, Option, OptionChain, Order, Position, Settlement
from engine.model.instruments import NEW_YORK

ReportKind = Literal["accepted", "filled", "partially_filled", "rejected", "cancelled", "replaced", "expired",
                     "settlement"]
_Z = Decimal(0)
_PRICE_Q = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What happened to an order (or, for ``settlement``, to expiring positions)."""

    kind: ReportKind
    order: Order | None
    fills: tuple[Fill, ...] = ()
    positions: tuple[Position, ...] = ()  # positions changed by this report (quantity 0 = closed)
    previous_price: Decimal | None = None
    note: str = ""


@dataclass(slots=True)
class _Book:
    """The latest quotes of one underlying's options (from any feed)."""

    chain: OptionChain
    rows: dict[str, int]
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    symbols: np.ndarray
    expiry_s: np.ndarray  # int64 epoch seconds of each row's expiry instant


@dataclass(slots=True)
class _Working:
    order: Order
    refs: list[tuple[str, str, int]]  # per leg: (kind 'opt'/'stk', underlying, row)
    instruments: list[Instrument]  # per leg, as the market lists it (settlement, multiplier)
    keys: list[str]  # per leg: the instrument key (formatted once)
    signs: list[int]
    ratios: list[int]
    #: per leg, its weight in the net price (± ratio, ÷ 100 for the shares of a mixed order: leg_weights)
    weights: list[float] = field(default_factory=list)
    fees: OrderFeeTracker = field(default_factory=OrderFeeTracker)
    triggered: bool = False  # a stop whose trigger the market has reached (persisted in ``state``)


class ExchangeBook:
    """State, lookups and fill booking of the paper exchange (see the module docstring)."""

    def __init__(self, config: PaperConfig | None = None, *, fees: FeeSchedule | None = None,
                 calendar: Any = None, id_prefix: str = "") -> None:
        self.config = config or PaperConfig()
        self.fees = fees or fee_schedule(self.config.fees)
        self.account_id = self.config.account_id
        self.cash = Decimal(str(self.config.starting_cash))
        self.realized = _Z
        self.positions: dict[str, Position] = {}
        self.working: dict[str, _Working] = {}
        self.fill_log: list[Fill] = []
        self._books: dict[str, _Book] = {}
        self._symbol_index: dict[str, str] = {}  # option key → underlying
        self._und_price: dict[str, float] = {}
        self._und_quote: dict[str, tuple[float, float]] = {}
        self._opening: dict[tuple[str, date], float] = {}
        self._marks: dict[str, float] = {}
        self._now: datetime | None = None
        self._session: date | None = None
        self._session_closed: date | None = None
        self.day_start_equity: Decimal | None = None
        self._seq = 0
        #: distinguishes ids of different account lifetimes (a reset must not reuse fill ids)
        self.id_prefix = id_prefix
        self._calendar = calendar
        self._req_cache: dict[str, tuple[int, int, float]] = {}
        self._pos_version: dict[str, int] = {}
        self._mkt_version: dict[str, int] = {}
        self.margin = self.config.margin_rules()
        #: the requirement projected while validating an order: (order id, quantity, the versions of the
        #: underlyings it was computed on, requirement per underlying after a full fill). Reused on a full fill
        #: only while those versions still hold — a resting order that fills later is margined afresh.
        self._projected: tuple[str, int, dict[str, tuple[int, int]], dict[str, float]] | None = None
        self._und_keys: dict[str, set[str]] = {}  # underlying → position keys (options and shares)

    # ---- ids and time -------------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self.id_prefix}-{self._seq:08d}"

    @property
    def now(self) -> datetime:
        """The exchange's time: the last time its owner gave it (a quote, a chain, a clock tick,
        :meth:`set_time`). It has no clock of its own, so the backtester and the paper broker drive it alike."""
        if self._now is None:
            raise RuntimeError("the paper exchange has not been given the time yet (set_time, a quote or a tick)")
        return self._now

    def set_time(self, now: datetime) -> None:
        """Tell the exchange the time without market data (the paper broker at connect, before any tick)."""
        if now.tzinfo is None:
            raise ValueError("the paper exchange's time must be timezone-aware")
        self._now = now

    def _cal(self) -> Any:
        if self._calendar is None:
            from engine.market.simulated.market import market_calendar_for

            self._calendar = market_calendar_for(self.now.astimezone(NEW_YORK).date())
        return self._calendar

    def _set_underlying(self, symbol: str, price: float, bid: float = math.nan, ask: float = math.nan) -> None:
        self._und_price[symbol] = price
        self._mkt_version[symbol] = self._mkt_version.get(symbol, 0) + 1
        self._und_quote[symbol] = (bid if math.isfinite(bid) else price, ask if math.isfinite(ask) else price)
        if self._now is not None:
            d = self._now.astimezone(NEW_YORK).date()
            key = (symbol, d)
            if key not in self._opening:
                cal = self._cal()
                if cal.is_session(d):
                    o, _ = cal.open_close(d)
                    if self._now >= o:
                        self._opening[key] = price

    def set_opening_print(self, symbol: str, day: date, price: float) -> None:
        """Record an opening print explicitly (the backtester's daily bars)."""
        self._opening[(symbol, day)] = price

    # ---- lookups ------------------------------------------------------------------------------
    def _ref_of(self, inst: Instrument) -> tuple[str, str, int] | None:
        if isinstance(inst, Option):
            key = inst.key
            und = self._symbol_index.get(key)
            row = self._books[und].rows.get(key) if und is not None and und in self._books else None
            if und is None or row is None:  # not in the current book (never listed here, or delisted since)
                return None
            return ("opt", und, row)
        return ("stk", inst.symbol, -1)

    def _canonical(self, inst: Instrument, ref: tuple[str, str, int]) -> Instrument:
        """The contract as its chain lists it: underlying, multiplier, style, and AM vs PM settlement
        (an index chain mixes AM-settled monthlies and PM weeklies; the expiry instant tells them apart)."""
        if not isinstance(inst, Option) or ref[0] != "opt" or ref[2] < 0:
            return inst
        chain = self._books[ref[1]].chain
        settlement = chain.settlement
        if settlement is not Settlement.PHYSICAL:
            exp = chain.expiry[ref[2]].astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC)
            settlement = Settlement.CASH_AM if exp.astimezone(NEW_YORK).hour < 12 else Settlement.CASH_PM
        if (inst.underlying, inst.multiplier, inst.style, inst.settlement) == (
                chain.underlying, chain.multiplier, chain.style, settlement):
            return inst
        return Option(root=inst.root, expiry=inst.expiry, strike=inst.strike, right=inst.right,
                      underlying=chain.underlying, multiplier=chain.multiplier, style=chain.style,
                      settlement=settlement, tick_size=inst.tick_size)

    def _touch(self, ref: tuple[str, str, int]) -> tuple[float, float, float, float]:
        kind, und, row = ref
        if kind == "opt":
            b = self._books[und]
            return float(b.bid[row]), float(b.ask[row]), float(b.bid_size[row]), float(b.ask_size[row])
        q = self._und_quote.get(und)
        if q is None:
            return math.nan, math.nan, math.nan, math.nan
        return q[0], q[1], math.inf, math.inf

    def mark(self, inst: Instrument) -> float:
        """Mark per unit: mid of a valid quote, else the last mark, else intrinsic / underlying price."""
        return self._mark(inst.key, inst)

    def _mark(self, key: str, inst: Instrument) -> float:
        if not isinstance(inst, Option):
            p = self._und_price.get(key)
            return p if p is not None else self._marks.get(key, math.nan)
        und = self._symbol_index.get(key)
        if und is not None:
            book = self._books[und]
            row = book.rows.get(key)
            if row is not None:
                bid, ask = float(book.bid[row]), float(book.ask[row])
                if math.isfinite(bid) and math.isfinite(ask) and 0 <= bid <= ask:
                    m = 0.5 * (bid + ask)
                    self._marks[key] = m
                    return m
        if key in self._marks:
            return self._marks[key]
        s = self._und_price.get(inst.underlying)
        if s is None:
            return math.nan
        return max(s - float(inst.strike), 0.0) if inst.is_call else max(float(inst.strike) - s, 0.0)

    def tick_size(self, inst: Option, price: Decimal) -> Decimal:
        scheme = self.config.tick_schemes.get(inst.root) or self.config.tick_schemes.get(inst.underlying) \
            or self.config.default_tick_scheme
        return tick_for(scheme, abs(price))

    # ---- account bookkeeping ------------------------------------------------------------------
    @staticmethod
    def _und_of(inst: Instrument) -> str:
        return inst.underlying if isinstance(inst, Option) else inst.symbol

    def _index_position(self, key: str, inst: Instrument, held: bool) -> None:
        keys = self._und_keys.setdefault(self._und_of(inst), set())
        if held:
            keys.add(key)
        else:
            keys.discard(key)

    def _apply(self, fill: Fill, key: str | None = None) -> Position:
        """Book a fill: cash, position quantity/average price, realized P&L."""
        inst = fill.instrument
        key = key or inst.key
        mult = inst.multiplier
        und = inst.underlying if isinstance(inst, Option) else inst.symbol
        self._pos_version[und] = self._pos_version.get(und, 0) + 1
        self.cash += fill.cash_flow
        self.fill_log.append(fill)
        pos = self.positions.get(key)
        q0 = pos.quantity if pos else 0
        avg0 = pos.avg_price if pos else _Z
        realized0 = pos.realized_pnl if pos else _Z
        dq = fill.quantity
        q1 = q0 + dq
        realized = _Z
        if q0 == 0 or (q0 > 0) == (dq > 0):
            avg1 = ((avg0 * abs(q0) + fill.price * abs(dq)) / abs(q1)).quantize(_PRICE_Q) if q1 else _Z
        else:
            closed = min(abs(dq), abs(q0))
            realized = (fill.price - avg0) * closed * mult * (1 if q0 > 0 else -1)
            avg1 = avg0 if abs(dq) <= abs(q0) else fill.price
            if q1 == 0:
                avg1 = _Z
        realized -= fill.fee
        self.realized += realized
        new = Position(instrument=inst, quantity=q1, avg_price=avg1, realized_pnl=realized0 + realized,
                       opened_at=(pos.opened_at if pos and q0 and (q0 > 0) == (q1 > 0) else fill.ts),
                       strategy_id=pos.strategy_id if pos else None)
        if q1 == 0:
            self.positions.pop(key, None)
        else:
            self.positions[key] = new
        self._index_position(key, inst, q1 != 0)
        return new

    # ---- account ------------------------------------------------------------------------------
    def net_liquidation(self) -> Decimal:
        mv = 0.0
        for key, p in self.positions.items():
            m = self._mark(key, p.instrument)
            if math.isfinite(m):
                mv += p.quantity * m * p.multiplier
            else:
                mv += float(p.cost_basis)
        return self.cash + Decimal(str(round(mv, 2)))

    def unrealized(self) -> Decimal:
        u = 0.0
        for key, p in self.positions.items():
            m = self._mark(key, p.instrument)
            if math.isfinite(m):
                u += p.unrealized_pnl(m)
        return Decimal(str(round(u, 2)))

