"""The backtest's trade ledger: groups every fill (trades, expirations, assignments) into strategy trades.

A trade is identified by the tag its opening intent carried (``<strategy>-00001``); fills of orders
tagged ``<tag>:...`` and settlement fills of symbols the trade holds belong to it. A trade closes
when every instrument it holds is back to zero. Money is ``Decimal`` to the cent:
gross P&L = Σ cash flows of its fills before fees; net = gross − fees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from engine.model import Fill, Order, price_multiplier


@dataclass(slots=True)
class TradeRecord:
    trade_no: int
    tag: str
    underlying: str
    opened_at: datetime
    legs: str  # human readable, e.g. "-1 SPY240621P00500000 / +1 SPY240621P00495000"
    quantity: int
    entry_price: Decimal | None  # net per unit: debit > 0, credit < 0
    exit_price: Decimal | None = None
    closed_at: datetime | None = None
    exit_reason: str = ""
    gross_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    credit: Decimal = Decimal(0)  # premium received at entry, dollars
    regime: str = ""
    holdings: dict[str, int] = field(default_factory=dict)
    open_value: float = 0.0  # mark-to-market value of what is still held (dollars)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees

    def as_row(self) -> dict:
        return {
            "trade_no": self.trade_no, "tag": self.tag, "underlying": self.underlying,
            "opened_at": self.opened_at.isoformat(), "closed_at": self.closed_at.isoformat() if self.closed_at else "",
            "legs": self.legs, "quantity": self.quantity,
            "entry_price": str(self.entry_price) if self.entry_price is not None else "",
            "exit_price": str(self.exit_price) if self.exit_price is not None else "",
            "exit_reason": self.exit_reason, "gross_pnl": f"{self.gross_pnl:.2f}", "fees": f"{self.fees:.2f}",
            "net_pnl": f"{self.net_pnl:.2f}", "credit": f"{self.credit:.2f}", "regime": self.regime,
            "status": "open" if self.is_open else "closed",
        }


class TradeLedger:
    def __init__(self) -> None:
        self.trades: dict[str, TradeRecord] = {}
        self.owner: dict[str, str] = {}  # instrument key -> trade tag currently holding it
        self.fees = Decimal(0)
        self.cash_flow = Decimal(0)  # Σ fill cash flows incl. fees (cross-check against the exchange's cash)

    @staticmethod
    def trade_tag(order: Order) -> str:
        return order.tag.split(":", 1)[0] if order.tag else order.order_id

    def on_fills(self, order: Order | None, fills: tuple[Fill, ...] | list[Fill], now: datetime, *,
                 regime: str = "", underlying: str = "") -> None:
        """Book fills; ``order`` None for settlement fills (matched by instrument ownership)."""
        if not fills:
            return
        touched: set[str] = set()
        order_tag = None
        for f in fills:
            if order is None or order.tag.endswith(":liquidate"):
                tag = self.owner.get(f.instrument.key) or (self.trade_tag(order) if order is not None else None)
                if tag is None and order is None and order_tag is not None:
                    tag = order_tag  # shares delivered by the exercise/assignment just booked
            else:
                tag = self.trade_tag(order)
            order_tag = order_tag or tag
            if tag is None:
                tag = f"untracked:{f.instrument.key}"
            rec = self.trades.get(tag)
            if rec is None:
                rec = TradeRecord(trade_no=len(self.trades) + 1, tag=tag, underlying=underlying, opened_at=now,
                                  legs="", quantity=0, entry_price=None, regime=regime)
                self.trades[tag] = rec
            touched.add(tag)
            gross = -Decimal(f.quantity) * f.price * f.instrument.multiplier
            rec.gross_pnl += gross
            rec.fees += f.fee
            self.fees += f.fee
            self.cash_flow += gross - f.fee
            key = f.instrument.key
            rec.holdings[key] = rec.holdings.get(key, 0) + f.quantity
            if rec.holdings[key] == 0:
                del rec.holdings[key]
                if self.owner.get(key) == tag:
                    del self.owner[key]
            else:
                self.owner[key] = tag
            if order is None:
                rank = _SETTLEMENT_RANK.get(f.kind, 0)
                if rank > _SETTLEMENT_RANK.get(rec.exit_reason, -1) or not rec.exit_reason:
                    rec.exit_reason = f.kind
        if order is not None and order_tag in self.trades:
            rec = self.trades[order_tag]
            net = _net_price(order, fills)
            if ":close" in order.tag or ":liquidate" in order.tag:
                rec.exit_price = net
                if ":close:" in order.tag:
                    rec.exit_reason = order.tag.split(":close:", 1)[1]
                elif not rec.exit_reason:
                    rec.exit_reason = "liquidate"
            elif rec.entry_price is None:
                rec.entry_price = net
                rec.quantity = order.filled_quantity or order.quantity
                rec.legs = " / ".join(f"{leg.signed_ratio:+d} {leg.symbol}" for leg in order.legs)
                rec.credit = max(Decimal(0), -(net or Decimal(0))) * rec.quantity * order.legs[0].multiplier
        for tag in touched:
            rec = self.trades[tag]
            if not rec.holdings and rec.closed_at is None:
                rec.closed_at = now

    def closed(self) -> list[TradeRecord]:
        return [t for t in self.trades.values() if not t.is_open]

    def open(self) -> list[TradeRecord]:
        return [t for t in self.trades.values() if t.is_open]


# the most telling settlement event names a trade's exit (an assignment beats the exercise of the hedge)
_SETTLEMENT_RANK = {"expiration": 1, "cash_settlement": 2, "exercise": 3, "assignment": 4, "early_assignment": 5}


def _net_price(order: Order, fills) -> Decimal | None:
    trade = [f for f in fills if f.kind == "trade"]
    units = sum(abs(f.quantity) for f in trade if f.leg_index == 0)
    ratio = order.legs[0].ratio
    if units == 0:
        return None
    m = price_multiplier(order.legs)  # a mixed order's shares count per contract share, as its limit
    total = sum((f.price * f.quantity * f.instrument.multiplier / m for f in trade), Decimal(0))
    return (total / (Decimal(units) / ratio)).quantize(Decimal("0.0001"))
