"""The simulated exchange and account behind paper trading and the backtester (one class, shared).

:class:`PaperExchange` is synchronous and clock-agnostic: the caller feeds it market data
(:meth:`on_chain`, :meth:`on_quotes`, :meth:`on_underlying` — from any feed, simulated or a broker's
live data), tells it the time (:meth:`on_time`), and sends orders (:meth:`submit`, :meth:`cancel`,
:meth:`replace`). Every call returns :class:`ExecutionReport` objects; nothing is published here
(the :class:`~engine.brokers.paper.PaperBroker` turns reports into bus events and persists them, the
backtester consumes them directly).

Fill model:
- marketable orders (market, or a limit the touch satisfies) fill at the touch — buy legs at the ask,
  sell legs at the bid — plus the configured slippage, never past the limit;
- resting limits fill at their limit when the market crosses them;
- combos fill at the net price whenever the net of the legs' touch is marketable (Σ weight·touch ≤ limit, the
  weights of ``engine.model.leg_weights``: ± ratio, the shares of a mixed order per contract share); shares fill
  at the touch and the options take the difference to the limit;
- a long option with no bid (bid 0) that an order sells to close is sold at the venue's minimum price, one
  tick, without slippage; an opening sell at a zero bid finds no buyer and rests;
- with ``partial_fills`` an update fills at most the displayed size at the touch (per leg ÷ ratio);
- stop and stop-limit orders rest untouched until the order's net price at the mark (Σ weight·mid of each leg's
  two-sided quote) reaches the stop (:func:`engine.model.stop_triggered`); from that quote on a stop is a market
  order and a stop-limit a limit order, filled as above (the triggering fill as a taker). A leg without a
  two-sided quote never triggers a stop: a missing quote is not a price move.

Prices: ``limit_price`` is per unit of the combo, positive = debit, negative = credit (docs/architecture.md §7) —
single legs too: a sell limit of −1.50 sells at 1.50 or better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import reduce
from math import gcd
from typing import Any, Literal

import numpy as np

from engine.brokers.base import OrderPreview
from engine.brokers.fees import FeeSchedule, OrderFeeTracker, fee_schedule, to_cents
from engine.brokers.margin import Holding, Trade, order_effect
from engine.brokers.paper_config import PaperConfig
from engine.market.simulated.ticks import COMBO_TICK, tick_for
from engine.model import (
    AccountSnapshot,
    Equity,
    Fill,
    Index,
    Instrument,
    Option,
    OptionChain,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Settlement,
    TimeInForce,
    is_on_tick,
    leg_weights,
    net_price,
    stop_triggered,
)
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


class PaperExchange:
    """Matching engine + account. Deterministic: ids come from counters, time from the caller."""

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

    # ---- market data (any feed) ---------------------------------------------------------------
    def on_chain(self, chain: OptionChain, now: datetime | None = None) -> list[ExecutionReport]:
        """A full chain snapshot: replace the book of ``chain.underlying`` and match working orders."""
        if now is not None:
            self._now = now
        und = chain.underlying
        old = self._books.get(und)
        if old is not None and old.symbols is chain.symbol:
            rows = old.rows
        elif old is not None and len(old.symbols) == len(chain.symbol) and np.array_equal(old.symbols, chain.symbol):
            rows = old.rows
        else:
            keys = list(map(str, np.asarray(chain.symbol).tolist()))
            rows = dict(zip(keys, range(len(keys)), strict=True))
            self._symbol_index.update(dict.fromkeys(rows, und))  # C loops: a backtest relists every day
        relisted = old is None or rows is not old.rows
        self._books[und] = _Book(chain=chain, rows=rows, bid=np.array(chain.bid, dtype=float),
                                 ask=np.array(chain.ask, dtype=float), bid_size=np.array(chain.bid_size, dtype=float),
                                 ask_size=np.array(chain.ask_size, dtype=float), symbols=chain.symbol,
                                 expiry_s=chain.expiry.astype("datetime64[s]").astype(np.int64))
        if relisted:
            for w in self.working.values():
                w.refs = [self._ref_of(inst) or ref for inst, ref in zip(w.instruments, w.refs, strict=True)]
        if math.isfinite(chain.spot) and chain.spot > 0:
            self._set_underlying(und, chain.spot)
        self._mkt_version[und] = self._mkt_version.get(und, 0) + 1
        return self._match(und)

    def on_quotes(self, underlying: str, rows: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                  now: datetime | None = None, bid_size: np.ndarray | None = None,
                  ask_size: np.ndarray | None = None) -> list[ExecutionReport]:
        """Row updates into the latest chain of ``underlying`` (``QuotesUpdated``)."""
        if now is not None:
            self._now = now
        book = self._books.get(underlying)
        if book is None:
            return []
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(book.bid)):
            raise ValueError(f"quote rows out of range for the {underlying} chain ({len(book.bid)} rows)")
        book.bid[rows] = bid
        book.ask[rows] = ask
        if bid_size is not None:
            book.bid_size[rows] = bid_size
        if ask_size is not None:
            book.ask_size[rows] = ask_size
        self._mkt_version[underlying] = self._mkt_version.get(underlying, 0) + 1
        return self._match(underlying)

    def on_quote(self, symbol: str, bid: float, ask: float, now: datetime | None = None,
                 bid_size: float = math.nan, ask_size: float = math.nan) -> list[ExecutionReport]:
        """One option quote by OCC key (``QuoteUpdated``)."""
        und = self._symbol_index.get(symbol)
        if und is None:
            return []
        row = self._books[und].rows[symbol]
        return self.on_quotes(und, np.array([row]), np.array([bid]), np.array([ask]), now,
                              None if math.isnan(bid_size) else np.array([bid_size]),
                              None if math.isnan(ask_size) else np.array([ask_size]))

    def on_underlying(self, symbol: str, price: float, now: datetime | None = None, bid: float = math.nan,
                      ask: float = math.nan) -> list[ExecutionReport]:
        """An underlying price; also the opening print for AM settlement (first price at/after the open)."""
        if now is not None:
            self._now = now
        if not (math.isfinite(price) and price > 0):
            return []
        self._set_underlying(symbol, price, bid, ask)
        return self._match_stock(symbol)

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
            if row is None:  # not in the current book (never listed here, or delisted since)
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

    # ---- orders -------------------------------------------------------------------------------
    def submit(self, order: Order, now: datetime | None = None) -> list[ExecutionReport]:
        """Validate and accept an order, then fill what is marketable. A rejection changes nothing."""
        if now is not None:
            self._now = now
        keys = [leg.instrument.key for leg in order.legs]
        reason, refs = self._validate(order, keys=keys)
        if reason:
            return [ExecutionReport("rejected", order.evolve(status=OrderStatus.REJECTED, reason=reason,
                                                             updated_at=self.now))]
        signs = [leg.side.sign for leg in order.legs]
        ratios = [leg.ratio for leg in order.legs]
        accepted = order.evolve(status=OrderStatus.WORKING, broker="paper", account_id=self.account_id,
                                broker_order_id=order.broker_order_id or self._next_id("P"), reason="",
                                updated_at=self.now)
        insts = [self._canonical(leg.instrument, ref) for leg, ref in zip(order.legs, refs, strict=True)]
        w = _Working(order=accepted, refs=refs, instruments=insts, keys=keys, signs=signs, ratios=ratios,
                     weights=[float(x) for x in leg_weights(order.legs)])
        self.working[accepted.order_id] = w
        reports = [ExecutionReport("accepted", accepted)]
        reports.extend(self._try_fill(w, aggressive=True))
        return reports

    def cancel(self, order_id: str, now: datetime | None = None, reason: str = "") -> list[ExecutionReport]:
        if now is not None:
            self._now = now
        w = self.working.pop(order_id, None)
        if w is None:
            return []
        return [ExecutionReport("cancelled", w.order.evolve(status=OrderStatus.CANCELLED, reason=reason,
                                                            updated_at=self.now))]

    def replace(self, order_id: str, limit_price: Decimal, quantity: int | None = None,
                now: datetime | None = None) -> list[ExecutionReport]:
        """Change a working order's limit (and total quantity); invalid changes reject the *change* only."""
        if now is not None:
            self._now = now
        w = self.working.get(order_id)
        if w is None:
            return []
        o = w.order
        new_qty = o.quantity if quantity is None else quantity
        candidate = o.evolve(limit_price=limit_price, quantity=new_qty, order_type=OrderType.LIMIT,
                             updated_at=self.now)
        reason = ""
        if o.order_type.is_stop:
            # a replace turns the order into a plain limit: a stop would silently lose its trigger
            reason = "a stop order cannot be replaced: cancel it and place a new one"
        elif new_qty <= o.filled_quantity:
            reason = f"new quantity {new_qty} must exceed the {o.filled_quantity} already filled"
        else:
            # a replace is re-validated like a new order for what it changes: price, shorting, buying power
            reason = self._price_problem(candidate) or self._cash_account_problem(candidate)
            if not reason and new_qty > o.quantity and self.config.check_buying_power:
                extra = candidate.evolve(quantity=new_qty - o.quantity, filled_quantity=0, updated_at=self.now)
                reason = self._buying_power_problem(extra, w.refs)
        if reason:
            return [ExecutionReport("rejected", o.evolve(reason=f"replace rejected: {reason}", updated_at=self.now),
                                    note="replace")]
        prev = o.limit_price
        w.order = candidate.evolve(reason="", updated_at=self.now)
        reports = [ExecutionReport("replaced", w.order, previous_price=prev)]
        reports.extend(self._try_fill(w, aggressive=True))
        return reports

    # ---- validation ---------------------------------------------------------------------------
    def _validate(self, order: Order, *, check_bp: bool = True,
                  keys: list[str] | None = None) -> tuple[str, list[tuple[str, str, int]]]:
        if check_bp and order.order_id in self.working:
            return f"order id {order.order_id} is already working", []
        if not order.legs:
            return "order has no legs", []
        if not isinstance(order.quantity, int) or order.quantity <= 0:
            return f"quantity must be a positive whole number, got {order.quantity}", []
        keys = keys if keys is not None else [leg.instrument.key for leg in order.legs]
        if len(set(keys)) != len(keys):
            return "the same contract appears in two legs", []
        if len(order.legs) > 1:
            g = reduce(gcd, [leg.ratio for leg in order.legs])
            if g > 1:
                ratios = ":".join(str(leg.ratio) for leg in order.legs)
                return (f"leg ratios {ratios} do not reduce: divide them by {g} and multiply the quantity "
                        f"instead"), []
        refs: list[tuple[str, str, int]] = []
        for leg, key in zip(order.legs, keys, strict=True):
            inst = leg.instrument
            if isinstance(inst, Index):
                return f"{inst.symbol} is an index and cannot be traded; trade its options", []
            if isinstance(inst, Option):
                und = self._symbol_index.get(key)
                if und is None:
                    known = inst.underlying in self._books
                    where = f"the {inst.underlying} chain" if known else f"any chain (no market data for {inst.underlying})"
                    return f"unknown contract {key}: not listed in {where}", []
                book = self._books[und]
                row = book.rows[key]
                if book.expiry_s[row] <= self.now.timestamp():
                    exp = datetime.fromtimestamp(int(book.expiry_s[row]), tz=UTC)
                    return f"contract {key} expired at {exp:%Y-%m-%d %H:%M} UTC", []
                refs.append(("opt", und, row))
            else:
                if inst.symbol not in self._und_price:
                    return f"no market data for {inst.symbol}", []
                refs.append(("stk", inst.symbol, -1))
        if order.order_type.is_stop:
            problem = self._stop_problem(order)
            if problem:
                return problem, refs
        if order.order_type.has_limit:
            problem = self._price_problem(order)
            if problem:
                return problem, refs
        elif order.order_type is OrderType.MARKET:
            for leg, ref in zip(order.legs, refs, strict=True):
                bid, ask, _, _ = self._touch(ref)
                side_px = ask if leg.side.sign > 0 else bid
                if not math.isfinite(side_px) or side_px < 0 or (leg.side.sign < 0 and side_px <= 0 and ref[0] == "opt"):
                    which = "ask" if leg.side.sign > 0 else "bid"
                    return f"market order needs a quote: no {which} for {leg.instrument.key}", refs
        problem = self._cash_account_problem(order)
        if problem:
            return problem, refs
        if check_bp and self.config.check_buying_power:
            problem = self._buying_power_problem(order, refs)
            if problem:
                return problem, refs
        return "", refs

    def _cash_account_problem(self, order: Order, quantity: int | None = None) -> str:
        """A cash account cannot go short: selling more than is held is refused."""
        if self.config.account_type != "cash":
            return ""
        q = order.remaining_quantity if quantity is None else quantity
        for leg in order.legs:
            pos = self.positions.get(leg.instrument.key)
            held = pos.quantity if pos else 0
            if leg.side.sign < 0 and held - leg.ratio * q < 0:
                return f"cash account: selling {leg.ratio * q} {leg.instrument.key} would open a short position"
        return ""

    def _stop_problem(self, order: Order) -> str:
        """A stop's trigger: present, finite, signed like the side (as a limit), on the venue's tick."""
        stop = order.stop_price
        if stop is None or not stop.is_finite():
            return f"a {order.order_type.value.replace('_', '-')} order needs a finite stop price, got {stop}"
        if len(order.legs) == 1:
            leg = order.legs[0]
            if (leg.side.sign > 0) != (stop > 0) or stop == 0:
                want = "positive (a debit)" if leg.side.sign > 0 else "negative (a credit: -1.00 sells at 1.00)"
                return f"a single-leg {leg.side.value} stop must be {want}, got {stop}"
            inst = leg.instrument
            tick = self.tick_size(inst, abs(stop)) if isinstance(inst, Option) else inst.tick_size
        else:
            tick = COMBO_TICK
        if not is_on_tick(stop, tick):
            return f"stop price {stop} is not on the {tick} tick"
        return ""

    def _price_problem(self, order: Order) -> str:
        price = order.limit_price
        if price is None:
            return "limit order needs a limit price"
        if not price.is_finite():
            return f"limit price {price} is not a number"
        if len(order.legs) == 1:
            leg = order.legs[0]
            inst = leg.instrument
            # signed like every net price: a buy is a debit (> 0), a sell a credit (< 0)
            if leg.side.sign > 0 and price <= 0:
                return f"a single-leg buy limit must be positive (a debit), got {price}"
            if leg.side.sign < 0 and price >= 0:
                return f"a single-leg sell limit must be negative (a credit: -1.50 sells at 1.50), got {price}"
            tick = self.tick_size(inst, abs(price)) if isinstance(inst, Option) else inst.tick_size
        else:
            tick = COMBO_TICK
        if not is_on_tick(price, tick):
            return f"limit price {price} is not on the {tick} tick"
        return ""

    # ---- buying power -------------------------------------------------------------------------
    def _positions_of(self, underlying: str) -> dict[str, Position]:
        return {k: self.positions[k] for k in self._und_keys.get(underlying, ()) if k in self.positions}

    def _requirement_for(self, underlying: str, positions: dict[str, Position]) -> float:
        """Margin of ``underlying``'s holdings within ``positions`` (pass only that underlying's for speed)."""
        return self.margin.group_requirement(underlying, self._und_price.get(underlying),
                                             self._holdings(underlying, positions).values())

    def _holdings(self, underlying: str, positions: dict[str, Position]) -> dict[str, Holding]:
        """The margin model's view of ``underlying``'s options and shares within ``positions``."""
        out: dict[str, Holding] = {}
        for key, p in positions.items():
            inst = p.instrument
            if isinstance(inst, Option) and inst.underlying == underlying:
                out[key] = self._holding(key, inst, p.quantity)
            elif isinstance(inst, Equity) and inst.symbol == underlying:
                out[key] = self._holding(key, inst, p.quantity)
        return out

    def _holding(self, key: str, inst: Instrument, quantity: int) -> Holding:
        if isinstance(inst, Option):
            return Holding(quantity, inst.multiplier, self._mark(key, inst), True, float(inst.strike), inst.is_call)
        return Holding(quantity, inst.multiplier, self._mark(key, inst), False)

    def _underlyings_held(self) -> set[str]:
        return {u for u, keys in self._und_keys.items() if keys}

    @staticmethod
    def _und_of(inst: Instrument) -> str:
        return inst.underlying if isinstance(inst, Option) else inst.symbol

    def _index_position(self, key: str, inst: Instrument, held: bool) -> None:
        keys = self._und_keys.setdefault(self._und_of(inst), set())
        if held:
            keys.add(key)
        else:
            keys.discard(key)

    def requirement(self) -> float:
        """Total option margin requirement (dollars); cached per underlying until its positions or quotes change."""
        total = 0.0
        for u in self._underlyings_held():
            key = (self._pos_version.get(u, 0), self._mkt_version.get(u, 0))
            hit = self._req_cache.get(u)
            if hit is not None and hit[:2] == key:
                total += hit[2]
                continue
            value = self._requirement_for(u, self._positions_of(u))
            self._req_cache[u] = (*key, value)
            total += value
        return total

    def requirement_by_underlying(self) -> dict[str, float]:
        """Option margin requirement per underlying held (dollars): the account's breakdown, so the Activity
        panel shows the very numbers :meth:`requirement` adds up (the same per-underlying cache)."""
        self.requirement()
        return {u: self._req_cache[u][2] for u in sorted(self._underlyings_held()) if u in self._req_cache}

    def _stock_values(self, positions: dict[str, Position]) -> tuple[float, float]:
        long_v = short_v = 0.0
        # a stock position is keyed by its symbol, which is also an underlying name: only those can be stock
        for key in self._und_keys if positions is self.positions else positions:
            p = positions.get(key)
            if p is not None and isinstance(p.instrument, Equity):
                v = p.quantity * self._mark(key, p.instrument)
                if v >= 0:
                    long_v += v
                else:
                    short_v -= v
        return long_v, short_v

    def _stock_margin(self) -> float:
        return 1.0 if self.config.account_type == "cash" else self.config.stock_margin

    def buying_power(self) -> float:
        long_v, short_v = self._stock_values(self.positions)
        return self.margin.buying_power(float(self.cash), long_v, short_v, self.requirement())

    def _projection(self, order: Order, refs: list[tuple[str, str, int]]) -> tuple[float, float, float, float] | None:
        """(buying power now, after a fill at the touch, requirement now, after) or None without quotes.

        The arithmetic is :func:`engine.brokers.margin.order_effect`, the same the risk engine runs."""
        est = self._estimate_fill(order, refs)
        if est is None:
            return None
        qty = order.remaining_quantity
        trades: list[Trade] = []
        groups: dict[str, dict[str, Holding]] = {}
        spots: dict[str, float | None] = {}
        for leg, ref, price in zip(order.legs, refs, est, strict=True):
            inst = self._canonical(leg.instrument, ref)
            und = self._und_of(inst)
            if und not in groups:
                groups[und] = self._holdings(und, self._positions_of(und))
                spots[und] = self._und_price.get(und)
            trades.append(Trade(inst.key, und, self._holding(inst.key, inst, 0), leg.side.sign * leg.ratio * qty,
                                price))
        req_now = self.requirement()  # refreshes the per-underlying cache used just below
        before = {u: self._req_cache[u][2] for u in groups if u in self._req_cache
                  and self._req_cache[u][:2] == (self._pos_version.get(u, 0), self._mkt_version.get(u, 0))}
        effect = order_effect(self.margin, groups, spots, trades, requirements_before=before)
        self._projected = (order.order_id, qty,
                           {u: (self._pos_version.get(u, 0), self._mkt_version.get(u, 0)) for u in groups},
                           effect.requirements_after)
        req_after = req_now - effect.requirement_before + effect.requirement_after
        long_v, short_v = self._stock_values(self.positions)
        bp_now = self.margin.buying_power(float(self.cash), long_v, short_v, req_now)
        return bp_now, bp_now + effect.buying_power_change, req_now, req_after

    def _buying_power_problem(self, order: Order, refs: list[tuple[str, str, int]]) -> str:
        proj = self._projection(order, refs)
        if proj is None:
            return ""
        bp_now, bp_after, _, _ = proj
        if bp_after < 0 and bp_after < bp_now - 1e-6:
            need = bp_now - bp_after
            return f"insufficient buying power: the order needs ${need:,.2f}, ${max(bp_now, 0.0):,.2f} available"
        return ""

    def preview(self, order: Order) -> OrderPreview:
        """What ``order`` would do if filled at the touch now: buying-power effect, fees, margin change."""
        reason, refs = self._validate(order, check_bp=False)
        if reason:
            return OrderPreview(errors=(reason,), source="estimate")
        proj = self._projection(order, refs)
        est = self._estimate_fill(order, refs)
        fee = _Z
        if est is not None:
            tracker = OrderFeeTracker()
            legs: list[tuple[int, object, int, Decimal, int]] = []
            for i, (leg, ref, px) in enumerate(zip(order.legs, refs, est, strict=True)):
                inst = self._canonical(leg.instrument, ref)
                dq = leg.side.sign * leg.ratio * order.quantity
                pos = self.positions.get(inst.key)
                held = pos.quantity if pos else 0
                closing = min(abs(dq), abs(held)) if held * dq < 0 else 0
                legs.append((i, inst, abs(dq), Decimal(str(px)), abs(dq) - closing))
                fee += self.fees.pass_through(inst, abs(dq), Decimal(str(px)), dq < 0)
            fee += sum(tracker.charge(self.fees, legs).values(), _Z)
        warnings: tuple[str, ...] = ()
        if proj is None:
            return OrderPreview(commission=to_cents(fee), warnings=("no quotes: buying power not estimated",))
        bp_now, bp_after, req_now, req_after = proj
        if bp_after < 0:
            warnings = (f"buying power would be ${bp_after:,.2f}",)
        return OrderPreview(buying_power_effect=Decimal(str(round(bp_after - bp_now, 2))), commission=to_cents(fee),
                            margin_change=Decimal(str(round(req_after - req_now, 2))), warnings=warnings,
                            source="estimate")

    def _estimate_fill(self, order: Order, refs: list[tuple[str, str, int]]) -> list[float] | None:
        """Per-leg price estimate: the touch (or the limit spread over the legs when no quote)."""
        out = []
        for leg, ref in zip(order.legs, refs, strict=True):
            bid, ask, _, _ = self._touch(ref)
            px = ask if leg.side.sign > 0 else bid
            if not math.isfinite(px):
                if len(order.legs) == 1 and order.limit_price is not None:
                    px = abs(float(order.limit_price))
                else:
                    return None
            out.append(px)
        return out

    # ---- matching -----------------------------------------------------------------------------
    def _match(self, underlying: str) -> list[ExecutionReport]:
        if not self.working:
            return []
        reports: list[ExecutionReport] = []
        for w in list(self.working.values()):
            if any(ref[1] == underlying for ref in w.refs):
                reports.extend(self._try_fill(w, aggressive=False))
        return reports

    def _match_stock(self, symbol: str) -> list[ExecutionReport]:
        if not self.working:
            return []
        reports: list[ExecutionReport] = []
        for w in list(self.working.values()):
            if any(ref[0] == "stk" and ref[1] == symbol for ref in w.refs):
                reports.extend(self._try_fill(w, aggressive=False))
        return reports

    def _stop_net_mark(self, w: _Working) -> float:
        """The order's net price at the mid of each leg's two-sided quote; NaN when a leg has none."""
        net = 0.0
        for weight, ref in zip(w.weights, w.refs, strict=True):
            if ref[0] == "opt" and (ref[2] < 0 or ref[1] not in self._books):
                return math.nan
            bid, ask, _, _ = self._touch(ref)
            if ref[0] == "stk" and not (math.isfinite(bid) and math.isfinite(ask)):
                px = self._und_price.get(ref[1], math.nan)
            elif math.isfinite(bid) and math.isfinite(ask) and 0 <= bid <= ask and ask > 0:
                px = 0.5 * (bid + ask)
            else:
                return math.nan
            net += weight * px
        return net

    def _try_fill(self, w: _Working, *, aggressive: bool) -> list[ExecutionReport]:
        o = w.order
        if o.order_type.is_stop and not w.triggered:
            assert o.stop_price is not None  # validated at submit
            mark = self._stop_net_mark(w)
            if not (math.isfinite(mark) and stop_triggered(o.stop_price, mark)):
                return []
            w.triggered = True
            aggressive = True  # the order the trigger releases takes the touch, as a new order would
        net = 0.0
        touches: list[float] = []
        avail = math.inf
        spreads: list[float] = []
        floor_legs: dict[int, float] = {}  # leg index -> the venue's minimum price (a no-bid long sold)
        for i, (sign, ratio, weight, ref) in enumerate(zip(w.signs, w.ratios, w.weights, w.refs, strict=True)):
            if ref[0] == "opt" and (ref[2] < 0 or ref[1] not in self._books):
                return []
            bid, ask, bsz, asz = self._touch(ref)
            px = ask if sign > 0 else bid
            if sign < 0 and ref[0] == "opt" and math.isfinite(px) and px <= 0:
                if not self._closes_long(w, i, ratio):
                    return []  # nobody bids: an opening sell (or a short beyond the long) has no buyer
                # a long option nobody bids for is sold at the venue's minimum price, one tick
                # (docs/trading-rules.md): the exit of a spread is never stuck on its worthless wing
                px = float(self.tick_size(w.instruments[i], _Z))  # type: ignore[arg-type]
                floor_legs[i] = px
                bsz = math.inf
            if not math.isfinite(px) or px < 0:
                return []
            touches.append(px)
            spreads.append(ask - bid if math.isfinite(ask - bid) else 0.0)
            net += weight * px
            size = asz if sign > 0 else bsz
            if math.isfinite(size):
                avail = min(avail, size // ratio)
        is_market = o.order_type in (OrderType.MARKET, OrderType.STOP)
        limit = float(o.limit_price) if o.limit_price is not None and not is_market else math.inf
        if not is_market and net > limit + 1e-9:
            return []
        qty = o.remaining_quantity
        if self.config.partial_fills:
            if not math.isfinite(avail):
                avail = qty
            qty = int(min(qty, avail))
            if qty <= 0:
                return []
        # prices per leg: at the touch plus slippage for takers; resting limits fill at their limit
        if aggressive or is_market:
            leg_px = [px if i in floor_legs else self._slipped(px, sign, spread, ref)
                      for i, (px, sign, spread, ref) in enumerate(zip(touches, w.signs, spreads, w.refs, strict=True))]
            net_px = sum(wt * p for wt, p in zip(w.weights, leg_px, strict=True))
            if not is_market and net_px > limit + 1e-9:
                leg_px = self._allocate(touches, w, limit)
        else:
            leg_px = self._allocate(touches, w, limit)
        return [self._execute(w, qty, leg_px)]

    def _closes_long(self, w: _Working, i: int, ratio: int) -> bool:
        """Whether leg ``i`` of ``w`` sells no more of an option than the account holds long."""
        pos = self.positions.get(w.keys[i])
        return pos is not None and pos.quantity >= ratio * w.order.remaining_quantity

    def _slipped(self, px: float, sign: int, spread: float, ref: tuple[str, str, int]) -> float:
        s = self.config.slippage
        if s.model == "none" or s.value == 0:
            return px
        if s.model == "ticks":
            tick = 0.01 if ref[0] == "stk" else float(self.tick_size(self._instrument_at(ref), Decimal(str(px))))
            extra = s.value * tick
        elif s.model == "spread_fraction":
            extra = s.value * max(spread, 0.0)
        else:
            extra = px * s.value / 100.0
        return max(px + sign * extra, 0.0)

    def _instrument_at(self, ref: tuple[str, str, int]) -> Option:
        book = self._books[ref[1]]
        return book.chain.option(ref[2])

    def _allocate(self, touches: list[float], w: _Working, net_target: float) -> list[float]:
        """Leg prices summing (with the legs' net-price weights) to ``net_target``: the difference from the touch
        goes to the option leg with the largest price (kept non-negative); shares stay at the touch, as a mixed
        combo fills on the floor (the stock leg prints at the market, the options absorb the net)."""
        prices = list(touches)
        net_touch = sum(wt * p for wt, p in zip(w.weights, touches, strict=True))
        diff = net_target - net_touch
        if abs(diff) < 1e-12:
            return prices
        options = [i for i, ref in enumerate(w.refs) if ref[0] == "opt"]
        ranked = sorted(options or range(len(prices)), key=lambda i: -prices[i])
        for i in ranked:
            new = prices[i] + diff / w.weights[i]
            if new >= 0:
                prices[i] = new
                return prices
        i = ranked[0]
        prices[i] = max(prices[i] + diff / w.weights[i], 0.0)
        return prices

    def _execute(self, w: _Working, qty: int, leg_px: list[float]) -> ExecutionReport:
        o = w.order
        now = self.now
        fills: list[Fill] = []
        changed: list[Position] = []
        fee_legs: list[tuple[int, object, int, Decimal, int]] = []
        dec_px = [Decimal(str(round(p, 4))).quantize(_PRICE_Q) for p in leg_px]
        for i, leg in enumerate(o.legs):
            inst = w.instruments[i]
            dq = leg.side.sign * leg.ratio * qty
            pos = self.positions.get(w.keys[i])
            held = pos.quantity if pos else 0
            closing = min(abs(dq), abs(held)) if held * dq < 0 else 0
            fee_legs.append((i, inst, abs(dq), dec_px[i], abs(dq) - closing))
        commissions = w.fees.charge(self.fees, fee_legs)
        proj = self._projected
        reuse = (proj is not None and proj[0] == o.order_id and proj[1] == qty == o.remaining_quantity
                 and all((self._pos_version.get(u, 0), self._mkt_version.get(u, 0)) == v for u, v in proj[2].items()))
        for i, leg in enumerate(o.legs):
            inst = w.instruments[i]
            dq = leg.side.sign * leg.ratio * qty
            fee = commissions[i] + self.fees.pass_through(inst, abs(dq), dec_px[i], dq < 0)
            fill = Fill(fill_id=self._next_id("F"), order_id=o.order_id, instrument=inst, quantity=dq,
                        price=dec_px[i], ts=now, fee=to_cents(fee), leg_index=i, client_order_id=o.client_order_id)
            changed.append(self._apply(fill, w.keys[i]))
            fills.append(fill)
        filled = o.filled_quantity + qty
        net = net_price(o.legs, dec_px)
        prev_avg = o.avg_fill_price or _Z
        avg = ((prev_avg * o.filled_quantity + net * qty) / filled).quantize(_PRICE_Q)
        status = OrderStatus.FILLED if filled >= o.quantity else OrderStatus.PARTIALLY_FILLED
        if reuse:
            # positions and marks are those the projection saw (only this fill moved them): it is exact
            assert proj is not None
            for u, value in proj[3].items():
                self._req_cache[u] = (self._pos_version.get(u, 0), self._mkt_version.get(u, 0), value)
        self._projected = None
        w.order = o.evolve(status=status, filled_quantity=filled, avg_fill_price=avg, updated_at=now)
        if status is OrderStatus.FILLED:
            self.working.pop(o.order_id, None)
        kind: ReportKind = "filled" if status is OrderStatus.FILLED else "partially_filled"
        return ExecutionReport(kind, w.order, tuple(fills), tuple(changed))

    # ---- account bookkeeping ------------------------------------------------------------------
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

    # ---- time: session close, DAY expiry, option expiration -----------------------------------
    def on_time(self, now: datetime, settlement_prices: dict[str, float] | None = None) -> list[ExecutionReport]:
        """Advance the exchange clock: at a session close DAY orders expire; expired options settle."""
        self._now = now
        reports: list[ExecutionReport] = []
        cal = self._cal()
        d = now.astimezone(NEW_YORK).date()
        if self._session != d and cal.is_session(d):
            o, _ = cal.open_close(d)
            if now >= o:
                self._session = d
                self.day_start_equity = self.net_liquidation()
                # DAY orders that lived through a close the exchange did not see (the app was down) expire now;
                # a DAY order placed after the last close (pre-market) is good for this session
                _, previous_close = cal.open_close(cal.previous_session(d))
                reports.extend(self.expire_day_orders(created_before=previous_close))
        last_session = cal.session_on_or_before(d)
        _, close = cal.open_close(last_session)
        if now >= close and self._session_closed != last_session:
            self._session_closed = last_session
            reports.extend(self.expire_day_orders(created_before=close))
        reports.extend(self.settle_expired(now, settlement_prices))
        return reports

    def expire_day_orders(self, created_before: datetime | None = None) -> list[ExecutionReport]:
        """Expire working DAY orders (only those created before ``created_before`` when given)."""
        out = []
        for oid, w in list(self.working.items()):
            if w.order.tif is TimeInForce.DAY and (created_before is None or w.order.created_at < created_before):
                del self.working[oid]
                out.append(ExecutionReport("expired", w.order.evolve(status=OrderStatus.EXPIRED,
                                                                     reason="DAY order expired at the close",
                                                                     updated_at=self.now)))
        return out

    def settle_expired(self, now: datetime, settlement_prices: dict[str, float] | None = None) -> list[ExecutionReport]:
        """Settle every option position whose expiry instant has passed.

        Physical (equity/ETF): ITM by ≥ $0.01 exercises/assigns into shares at the strike; cash-settled
        (index): intrinsic value in cash — AM-settled at the opening print of the expiry day, PM at the
        close; OTM expires worthless. ``settlement_prices`` overrides the underlying price per symbol.
        """
        self._now = now
        due = [p for p in self.positions.values()
               if isinstance(p.instrument, Option) and p.instrument.expires_at <= now]
        if not due:
            return []
        fills: list[Fill] = []
        changed: dict[str, Position] = {}
        for p in sorted(due, key=lambda x: x.instrument.key):
            inst: Option = p.instrument  # type: ignore[assignment]
            settle = self._settlement_price(inst, settlement_prices)
            if settle is None:
                continue
            K = float(inst.strike)
            intrinsic = (settle - K) if inst.is_call else (K - settle)
            itm = intrinsic >= 0.01 - 1e-9
            q = p.quantity
            if itm and inst.settlement is Settlement.PHYSICAL:
                kind = "exercise" if q > 0 else "assignment"
                f1 = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-q, price=_Z, ts=now,
                          fee=to_cents(self.fees.exercise_fee), kind=kind)
                changed[inst.key] = self._apply(f1)
                shares = q * inst.multiplier * (1 if inst.is_call else -1)
                stock = Equity(inst.underlying)
                f2 = Fill(fill_id=self._next_id("F"), order_id="", instrument=stock, quantity=shares,
                          price=Decimal(str(inst.strike)), ts=now, kind=kind)
                changed[stock.key] = self._apply(f2)
                fills += [f1, f2]
            elif itm:
                px = Decimal(str(round(intrinsic, 4))).quantize(_PRICE_Q)
                f = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-q, price=px, ts=now,
                         kind="cash_settlement")
                changed[inst.key] = self._apply(f)
                fills.append(f)
            else:
                f = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-q, price=_Z, ts=now,
                         kind="expiration")
                changed[inst.key] = self._apply(f)
                fills.append(f)
        if not fills:
            return []
        return [ExecutionReport("settlement", None, tuple(fills), tuple(changed.values()),
                                note=f"{len(due)} expiring position(s) settled")]

    def _settlement_price(self, inst: Option, overrides: dict[str, float] | None) -> float | None:
        und = inst.underlying
        if overrides and und in overrides:
            return float(overrides[und])
        if inst.settlement is Settlement.CASH_AM:
            d = inst.expires_at.astimezone(NEW_YORK).date()
            if (und, d) in self._opening:
                return self._opening[(und, d)]
        return self._und_price.get(und)

    def early_assignments(self, underlying: str, dividend: float, now: datetime | None = None) -> list[ExecutionReport]:
        """Before an ex-dividend date: assign short American calls whose time value is below ``dividend``.

        Only when ``early_assignment`` is enabled; fills are flagged ``kind="early_assignment"``.
        """
        if now is not None:
            self._now = now
        if not self.config.early_assignment or dividend <= 0:
            return []
        spot = self._und_price.get(underlying)
        if spot is None:
            return []
        fills: list[Fill] = []
        changed: dict[str, Position] = {}
        for p in sorted(list(self.positions.values()), key=lambda x: x.instrument.key):
            inst = p.instrument
            if not (isinstance(inst, Option) and inst.underlying == underlying and inst.is_call and p.quantity < 0
                    and inst.settlement is Settlement.PHYSICAL):
                continue
            intrinsic = spot - float(inst.strike)
            if intrinsic <= 0:
                continue
            extrinsic = self.mark(inst) - intrinsic
            if extrinsic >= dividend:
                continue
            f1 = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-p.quantity, price=_Z,
                      ts=self.now, fee=to_cents(self.fees.exercise_fee), kind="early_assignment")
            changed[inst.key] = self._apply(f1)
            stock = Equity(underlying)
            f2 = Fill(fill_id=self._next_id("F"), order_id="", instrument=stock, quantity=p.quantity * inst.multiplier,
                      price=Decimal(str(inst.strike)), ts=self.now, kind="early_assignment")
            changed[stock.key] = self._apply(f2)
            fills += [f1, f2]
        if not fills:
            return []
        return [ExecutionReport("settlement", None, tuple(fills), tuple(changed.values()),
                                note=f"early assignment before a ${dividend:.2f} dividend")]

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

    def account(self) -> AccountSnapshot:
        nl = self.net_liquidation()
        req = self.requirement()
        long_v, short_v = self._stock_values(self.positions)
        bp = self.margin.buying_power(float(self.cash), long_v, short_v, req)
        day = nl - self.day_start_equity if self.day_start_equity is not None else _Z
        return AccountSnapshot(
            account_id=self.account_id, cash=self.cash.quantize(Decimal("0.01")), net_liquidation=nl.quantize(Decimal("0.01")),
            buying_power=Decimal(str(round(bp, 2))),
            maintenance_requirement=Decimal(str(round(req + self.margin.stock_maintenance(long_v, short_v), 2))),
            realized_pnl=self.realized.quantize(Decimal("0.01")), unrealized_pnl=self.unrealized(),
            day_pnl=day.quantize(Decimal("0.01")),
            ts=self.now, broker="paper", is_live=False,
        )

    def open_orders(self) -> list[Order]:
        return [w.order for w in self.working.values()]

    # ---- state (persistence) ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Account scalars (positions and orders are persisted row by row by the broker)."""
        return {
            "cash": str(self.cash), "realized": str(self.realized), "seq": self._seq, "id_prefix": self.id_prefix,
            "day_start_equity": None if self.day_start_equity is None else str(self.day_start_equity),
            "session": self._session.isoformat() if self._session else None,
            "session_closed": self._session_closed.isoformat() if self._session_closed else None,
            "marks": self._marks, "fees": {oid: w.fees.state() for oid, w in self.working.items()},
            "triggered": sorted(oid for oid, w in self.working.items() if w.triggered),
            "opening": {f"{s}|{d.isoformat()}": p for (s, d), p in self._opening.items()},
        }

    def restore(self, state: dict[str, Any], positions: list[Position], orders: list[Order]) -> None:
        self.cash = Decimal(state["cash"])
        self.realized = Decimal(state["realized"])
        self._seq = int(state.get("seq", 0))
        self.id_prefix = str(state.get("id_prefix", self.id_prefix))
        dse = state.get("day_start_equity")
        self.day_start_equity = Decimal(dse) if dse is not None else None
        self._session = date.fromisoformat(state["session"]) if state.get("session") else None
        self._session_closed = date.fromisoformat(state["session_closed"]) if state.get("session_closed") else None
        self._marks = {k: float(v) for k, v in state.get("marks", {}).items()}
        self._opening = {}
        for k, v in state.get("opening", {}).items():
            s, d = k.split("|")
            self._opening[(s, date.fromisoformat(d))] = float(v)
        self.positions = {p.symbol: p for p in positions if p.quantity != 0}
        self._und_keys = {}
        for key, p in self.positions.items():
            self._index_position(key, p.instrument, True)
        fees = state.get("fees", {})
        triggered = set(state.get("triggered", ()))
        self.working = {}
        for o in orders:
            refs = [self._ref_of(leg.instrument) or ("opt", getattr(leg.instrument, "underlying", ""), -1)
                    for leg in o.legs]
            insts = [self._canonical(leg.instrument, ref) for leg, ref in zip(o.legs, refs, strict=True)]
            w = _Working(order=o, refs=refs, instruments=insts, keys=[i.key for i in insts],
                         signs=[leg.side.sign for leg in o.legs],
                         ratios=[leg.ratio for leg in o.legs], weights=[float(x) for x in leg_weights(o.legs)])
            if o.order_id in fees:
                w.fees = OrderFeeTracker.from_state(fees[o.order_id])
            w.triggered = o.order_id in triggered
            self.working[o.order_id] = w

