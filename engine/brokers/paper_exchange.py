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
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from engine.brokers.fees import OrderFeeTracker
from engine.brokers.paper_book import _Z, ExecutionReport, ReportKind, _Book, _Working
from engine.brokers.paper_settlement import ExchangeSessions
from engine.model import AccountSnapshot, OptionChain, Order, OrderStatus, OrderType, Position, leg_weights

__all__ = ["ExecutionReport", "PaperExchange", "ReportKind"]


class PaperExchange(ExchangeSessions):
    """Matching engine + account. Deterministic: ids come from counters, time from the caller.

    Built in layers, one module each: the book and account state (:mod:`engine.brokers.paper_book`), validation and
    buying power (:mod:`engine.brokers.paper_validation`), matching (:mod:`engine.brokers.paper_matching`), the
    session clock and settlement (:mod:`engine.brokers.paper_settlement`); here the market-data, order and
    persistence entry points."""

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

