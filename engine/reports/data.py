"""What a performance report says, computed from the store: equity and drawdown, trades, fees, Greeks over time,
realised P&L attributed by underlying, strategy and regime, and the journal's notes.

Realised P&L is average-cost per account and symbol over every fill up to the report's end (a position opened
before the report's start still closes against its true cost); only closes inside the period count toward
the period. Each close is attributed to the underlying of its instrument, the strategy of its order (``manual``
for orders not placed by a strategy), and the regime of the newest history row at or before the fill (``—``
when the history has none). Fees are the fills' fees. Equity, drawdown and Greeks come from the ``pnl_history``
rows the engine writes (:mod:`engine.reports.history`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from engine.journal import JournalNote, search
from engine.model import instrument_from_key
from engine.reports.history import HistoryRow, accounts_with_history, load_history, regime_at


class ReportError(ValueError):
    """The report cannot be made as asked (dates, account, output); the message says why."""


@dataclass(frozen=True)
class TradeRow:
    ts: datetime
    order_id: str
    symbol: str
    underlying: str
    quantity: int
    price: Decimal
    fee: Decimal
    multiplier: int
    strategy: str
    regime: str
    realized: float  # realised P&L of this fill's closing part (0 for an opening fill), before fees
    kind: str = "trade"


@dataclass(frozen=True)
class ReportData:
    start: date
    end: date
    account_id: str | None
    mode: str | None
    history: list[HistoryRow]
    trades: list[TradeRow]
    notes: list[JournalNote]
    generated_at: datetime
    attribution: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def equity(self) -> list[tuple[datetime, float]]:
        return [(r.ts, r.net_liquidation) for r in self.history if math.isfinite(r.net_liquidation)]

    def drawdown(self) -> list[tuple[datetime, float]]:
        """Drawdown from the running peak, as a fraction (−0.05 is 5 % under the peak)."""
        out, peak = [], -math.inf
        for ts, v in self.equity:
            peak = max(peak, v)
            out.append((ts, v / peak - 1.0 if peak > 0 else 0.0))
        return out

    def summary(self) -> dict[str, float]:
        eq = self.equity
        dd = [d for _, d in self.drawdown()]
        fees = float(sum((t.fee for t in self.trades), Decimal(0)))
        realized = sum(t.realized for t in self.trades)
        return {
            "start_equity": eq[0][1] if eq else math.nan,
            "end_equity": eq[-1][1] if eq else math.nan,
            "change": eq[-1][1] - eq[0][1] if eq else math.nan,
            "return_pct": (eq[-1][1] / eq[0][1] - 1.0) * 100 if eq and eq[0][1] else math.nan,
            "max_drawdown_pct": min(dd) * 100 if dd else math.nan,
            "realized": realized,
            "fees": fees,
            "net_realized": realized - fees,
            "fills": float(len(self.trades)),
            "orders": float(len({t.order_id for t in self.trades})),
        }


def parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(f"{what} {text!r} is not a date: use YYYY-MM-DD") from exc


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """The period in UTC: from the start of ``start`` to the end of ``end`` (both days included)."""
    if end < start:
        raise ReportError(f"the period ends ({end}) before it starts ({start})")
    return (datetime.combine(start, time.min, UTC),
            datetime.combine(end + timedelta(days=1), time.min, UTC) - timedelta(microseconds=1))


def _underlying(symbol: str, multiplier: int) -> str:
    from engine.model.instruments import Option

    try:
        inst = instrument_from_key(symbol, multiplier)
    except Exception:  # instrument_from_key raises on anything not an OCC key: use the symbol as it is
        return symbol
    return inst.underlying if isinstance(inst, Option) else symbol


def build_report(store: Any, start: date, end: date, *, account_id: str | None = None, mode: str | None = None,
                 now: datetime | None = None) -> ReportData:
    """Collect the report for ``[start, end]`` (days, inclusive). Without ``account_id`` the account (and mode)
    with the most recent history is reported; trades are filtered by that account when orders name one."""
    t0, t1 = day_bounds(start, end)
    if mode is not None and mode not in ("paper", "live"):
        raise ReportError(f"mode {mode!r} is not paper or live")
    if account_id is None:
        known = [a for a in accounts_with_history(store) if mode is None or a[1] == mode]
        if known:
            account_id, mode = known[0][0], known[0][1]
    history = load_history(store, account_id, mode, start=t0, end=t1) if account_id is not None else []

    def regime_of(ts: datetime) -> str:
        if account_id is None or mode is None:
            return "—"
        return regime_at(store, account_id, mode, ts) or "—"

    rows = store.query(
        "SELECT f.*, o.strategy_id AS strategy_id, o.account_id AS account_id FROM fills f "
        "LEFT JOIN orders o ON o.order_id = f.order_id WHERE f.ts <= ? ORDER BY f.ts, f.rowid",
        (t1.isoformat(),))
    position: dict[tuple[str, str], tuple[int, Decimal]] = {}
    trades: list[TradeRow] = []
    for r in rows:
        acct = r["account_id"] or ""
        if account_id is not None and acct and acct != account_id:
            continue
        sym, mult, qty, px = r["symbol"], int(r["multiplier"]), int(r["quantity"]), Decimal(r["price"])
        key = (acct, sym)
        held, avg = position.get(key, (0, Decimal(0)))
        realized = Decimal(0)
        if held and (held > 0) != (qty > 0):  # closes (part of) the position at its average cost
            closed = min(abs(qty), abs(held))
            realized = (px - avg) * closed * mult * (1 if held > 0 else -1)
            new = held + qty
            position[key] = (new, avg if new and (new > 0) == (held > 0) else (px if new else Decimal(0)))
        else:
            new = held + qty
            position[key] = (new, (avg * abs(held) + px * abs(qty)) / abs(new) if new else Decimal(0))
        ts = datetime.fromisoformat(r["ts"])
        if ts < t0:
            continue
        trades.append(TradeRow(ts=ts, order_id=r["order_id"], symbol=sym, underlying=_underlying(sym, mult),
                               quantity=qty, price=px, fee=Decimal(r["fee"]), multiplier=mult,
                               strategy=r["strategy_id"] or "manual", regime=regime_of(ts),
                               realized=float(realized), kind=r["kind"]))
    attribution: dict[str, dict[str, dict[str, float]]] = {}
    for dim in ("underlying", "strategy", "regime"):
        agg: dict[str, dict[str, float]] = defaultdict(lambda: {"realized": 0.0, "fees": 0.0, "fills": 0.0})
        for t in trades:
            a = agg[getattr(t, dim)]
            a["realized"] += t.realized
            a["fees"] += float(t.fee)
            a["fills"] += 1
        for a in agg.values():
            a["net"] = a["realized"] - a["fees"]
        attribution[dim] = dict(sorted(agg.items(), key=lambda kv: kv[1]["net"]))
    order_ids = {t.order_id for t in trades}
    notes = [n for n in search(store) if n.order_id in order_ids or t0 <= n.ts <= t1]
    return ReportData(start=start, end=end, account_id=account_id, mode=mode, history=history, trades=trades,
                      notes=notes, generated_at=now or store.now(), attribution=attribution)
