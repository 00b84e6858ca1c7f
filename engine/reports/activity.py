"""Account activity: every fill as a transaction, fills grouped into trades with their realised P&L, fee
totals, and the paper account's margin breakdown.

The grouping is the backtest's :class:`~engine.backtest.ledger.TradeLedger`, so a trade's P&L reads the same
in a backtest and in the account: a strategy's orders group by their tag; a manual order without a tag
opens a trade of its own, and a later manual order that trades an instrument an open trade holds is booked
as that trade's close (so closing a spread from the Positions panel ends the trade it opened). Settlement
fills (expiration, assignment) have no order and follow the instrument's owner, as in a backtest.

The whole history is booked before the period is applied, so a trade opened before the period still closes
against its real entry. Days are New York trading days. The margin breakdown is the paper exchange's own
(:meth:`PaperExchange.requirement_by_underlying` over :mod:`engine.brokers.margin`), not a re-estimate.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backtest.ledger import TradeLedger, TradeRecord
from engine.model import AccountSnapshot, Fill, Option, Order
from engine.model.instruments import NEW_YORK
from engine.store.repositories import FillRepository, OrderRepository

if TYPE_CHECKING:
    from engine.brokers.paper_exchange import PaperExchange
    from engine.store.database import Store


@dataclass(frozen=True)
class Transaction:
    """One fill as the account saw it; ``net_cash`` is money in (+) or out (−), fees included."""

    ts: datetime
    order_id: str
    symbol: str
    underlying: str
    order_legs: str
    side: str  # BUY | SELL
    quantity: int  # unsigned
    price: Decimal
    fee: Decimal
    net_cash: Decimal
    kind: str


@dataclass(frozen=True)
class MarginLine:
    """One underlying of the margin breakdown with the positions it margins (symbol, quantity, mark, value)."""

    underlying: str
    option_requirement: float
    stock_maintenance: float
    positions: tuple[tuple[str, int, float, float], ...]

    @property
    def total(self) -> float:
        return self.option_requirement + self.stock_maintenance


@dataclass(frozen=True)
class AccountActivity:
    start: date
    end: date
    symbol: str
    transactions: list[Transaction]
    trades: list[TradeRecord]  # closed inside the period, oldest first
    open_trades: int
    margin: list[MarginLine]
    account: AccountSnapshot | None

    @property
    def fees(self) -> Decimal:
        return sum((t.fee for t in self.transactions), Decimal(0))

    @property
    def realized_gross(self) -> Decimal:
        return sum((t.gross_pnl for t in self.trades), Decimal(0))

    @property
    def realized_net(self) -> Decimal:
        return sum((t.net_pnl for t in self.trades), Decimal(0))

    @property
    def net_cash(self) -> Decimal:
        return sum((t.net_cash for t in self.transactions), Decimal(0))

    def fees_by_underlying(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for t in self.transactions:
            out[t.underlying] += t.fee
        return dict(sorted(out.items()))


def underlying_of(instrument: Any) -> str:
    return instrument.underlying if isinstance(instrument, Option) else instrument.key


def _ny_day(ts: datetime) -> date:
    return ts.astimezone(NEW_YORK).date()


def _matches(symbol: str, *names: str) -> bool:
    s = symbol.strip().upper()
    return not s or any(s == n.upper() or n.upper().startswith(s) for n in names if n)


def _legs_text(order: Order | None) -> str:
    if order is None:
        return ""
    return " / ".join(f"{leg.signed_ratio:+d} {leg.symbol}" for leg in order.legs)


def book_trades(orders: dict[str, Order], fills: Iterable[Fill]) -> TradeLedger:
    """Group ``fills`` (oldest first) into trades with the backtest's ledger (see the module docstring)."""
    ledger = TradeLedger()
    batch: list[Fill] = []
    batch_order: str | None = None

    def flush() -> None:
        if not batch:
            return
        order = orders.get(batch_order or "")
        und = underlying_of(batch[0].instrument)
        if order is not None and not order.tag:
            owner = next((ledger.owner[f.instrument.key] for f in batch if f.instrument.key in ledger.owner), None)
            order = replace(order, tag=f"{owner}:close" if owner else order.order_id)
        ledger.on_fills(order, list(batch), batch[-1].ts, underlying=und)
        batch.clear()

    for f in fills:
        key = f.order_id if f.order_id in orders else None
        if batch and (key != batch_order or key is None):
            flush()
        batch_order = key
        batch.append(f)
    flush()
    return ledger


def margin_breakdown(exchange: PaperExchange) -> list[MarginLine]:
    """Per underlying: the exchange's option requirement, the stock maintenance of its shares, and the
    positions behind them with their marks."""
    reqs = exchange.requirement_by_underlying()
    held: dict[str, list[tuple[str, int, float, float]]] = defaultdict(list)
    stock: dict[str, tuple[float, float]] = {}
    for key, p in sorted(exchange.positions.items()):
        if p.quantity == 0:
            continue
        u = underlying_of(p.instrument)
        mark = exchange.mark(p.instrument)
        value = p.quantity * mark * p.multiplier if math.isfinite(mark) else math.nan
        held[u].append((key, p.quantity, mark, value))
        if not isinstance(p.instrument, Option) and math.isfinite(value):
            lv, sv = stock.get(u, (0.0, 0.0))
            stock[u] = (lv + max(value, 0.0), sv + max(-value, 0.0))
    out = []
    for u in sorted(set(held) | set(reqs)):
        lv, sv = stock.get(u, (0.0, 0.0))
        out.append(MarginLine(u, float(reqs.get(u, 0.0)), exchange.margin.stock_maintenance(lv, sv),
                              tuple(held.get(u, ()))))
    return out


def filter_margin(lines: list[MarginLine], symbol: str) -> list[MarginLine]:
    """The underlyings of ``symbol`` (an underlying or the start of a contract symbol); all when empty."""
    if not symbol.strip():
        return lines
    return [m for m in lines if _matches(symbol, m.underlying, *(p[0] for p in m.positions))]


def build_activity(store: Store, start: date, end: date, *, symbol: str = "",
                   exchange: PaperExchange | None = None, account: AccountSnapshot | None = None) -> AccountActivity:
    """The activity of New York days ``start``..``end`` (inclusive), optionally for one symbol or underlying."""
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    orders = {o.order_id: o for o in OrderRepository(store).list()}
    fills = FillRepository(store).list()
    ledger = book_trades(orders, fills)
    txs: list[Transaction] = []
    for f in fills:
        und = underlying_of(f.instrument)
        if not (start <= _ny_day(f.ts) <= end) or not _matches(symbol, f.instrument.key, und):
            continue
        txs.append(Transaction(
            ts=f.ts, order_id=f.order_id, symbol=f.instrument.key, underlying=und,
            order_legs=_legs_text(orders.get(f.order_id)), side="BUY" if f.quantity > 0 else "SELL",
            quantity=abs(f.quantity), price=f.price, fee=f.fee, net_cash=f.cash_flow, kind=f.kind))
    closed = [t for t in ledger.closed()
              if t.closed_at is not None and start <= _ny_day(t.closed_at) <= end
              and _matches(symbol, t.underlying, *t.legs.replace("/", " ").split())]
    margin = filter_margin(margin_breakdown(exchange) if exchange is not None else [], symbol)
    return AccountActivity(start=start, end=end, symbol=symbol.strip().upper(), transactions=txs,
                           trades=sorted(closed, key=lambda t: t.closed_at or t.opened_at),
                           open_trades=len(ledger.open()), margin=margin, account=account)


TRANSACTION_HEADER = ("time_utc", "order_id", "symbol", "underlying", "order_legs", "side", "quantity", "price",
                      "fee", "net_cash", "kind")
TRADE_HEADER = ("trade_no", "underlying", "legs", "quantity", "opened_utc", "closed_utc", "entry_price",
                "exit_price", "exit_reason", "gross_pnl", "fees", "net_pnl")
MARGIN_HEADER = ("underlying", "option_requirement", "stock_maintenance", "total", "symbol", "quantity", "mark",
                 "market_value")


def write_csv(activity: AccountActivity, section: str, path: str | Path) -> int:
    """Write one section (``transactions``, ``trades`` or ``margin``) as CSV; returns the rows written.

    Machine-readable on purpose (ISO UTC times, plain decimals) so a spreadsheet or a tax tool reads it as is."""
    rows: list[tuple[Any, ...]]
    header: tuple[str, ...]
    if section == "transactions":
        header = TRANSACTION_HEADER
        rows = [(t.ts.isoformat(), t.order_id, t.symbol, t.underlying, t.order_legs, t.side, t.quantity,
                 str(t.price), str(t.fee), str(t.net_cash), t.kind) for t in activity.transactions]
    elif section == "trades":
        header = TRADE_HEADER
        rows = [(t.trade_no, t.underlying, t.legs, t.quantity, t.opened_at.isoformat(),
                 t.closed_at.isoformat() if t.closed_at else "", "" if t.entry_price is None else str(t.entry_price),
                 "" if t.exit_price is None else str(t.exit_price), t.exit_reason, f"{t.gross_pnl:.2f}",
                 f"{t.fees:.2f}", f"{t.net_pnl:.2f}") for t in activity.trades]
    elif section == "margin":
        header = MARGIN_HEADER
        rows = []
        for m in activity.margin:
            for sym, qty, mark, value in m.positions or (("", 0, math.nan, math.nan),):
                rows.append((m.underlying, f"{m.option_requirement:.2f}", f"{m.stock_maintenance:.2f}",
                             f"{m.total:.2f}", sym, qty, f"{mark:.4f}", f"{value:.2f}"))
    else:
        raise ValueError(f"unknown section {section!r}: transactions, trades or margin")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return len(rows)
