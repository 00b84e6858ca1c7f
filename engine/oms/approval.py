"""ApprovalGate: orders wait in ``PENDING_APPROVAL`` with a preview until a human approves, rejects (with a
reason) or modifies the price, or until the approval expires (``approval_expiry_s``).

The preview answers what a trader asks before clicking *Approve*: the legs with their quotes, the net price
against mid and natural, max profit / max loss / breakevens (expiry payoff), the buying-power effect (the
broker's dry-run / whatIf when it offers one, our own estimate otherwise), how the portfolio Greeks change,
and the headroom left under every limit. Every decision is written to the ``approvals`` table and the audit
log with who and when.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.model import Order

if TYPE_CHECKING:
    from engine.brokers.base import OrderPreview
    from engine.risk.engine import RiskDecision, RiskEngine
    from engine.store import Store


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class ApprovalPreview:
    """Everything shown in the approval dialog. Money in dollars (floats for display); + debit / − credit."""

    order_id: str
    legs: tuple[dict[str, Any], ...]
    quantity: int
    limit_price: float | None
    mid: float | None
    natural: float | None
    price_vs_mid: float | None  # limit − mid per unit; + = paying more than mid
    max_profit: float | None  # None = unbounded
    max_loss: float | None  # None = unbounded
    breakevens: tuple[float, ...]
    defined_risk: bool
    stress_loss: float | None
    buying_power_effect: float | None  # negative = uses buying power
    buying_power_source: str  # broker | estimate
    commission: float | None
    broker_warnings: tuple[str, ...]
    greeks_before: dict[str, float]
    greeks_after: dict[str, float]
    greeks_change: dict[str, float]
    headroom: dict[str, dict[str, float | None]]
    checks: tuple[dict[str, Any], ...]
    created_at: datetime
    expires_at: datetime
    notes: tuple[str, ...] = field(default_factory=tuple)
    order_type: str = "limit"
    stop_price: float | None = None  # a stop's trigger on the net price (+ debit / − credit)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["expires_at"] = self.expires_at.isoformat()
        return d


def build_preview(order: Order, decision: RiskDecision, risk: RiskEngine, broker_preview: OrderPreview | None,
                  *, now: datetime, expiry_s: float) -> ApprovalPreview:
    """Assemble the preview from the risk decision (synchronous) and an optional broker dry-run."""
    legs = []
    for leg in order.legs:
        bid, ask = risk.market.bid_ask(leg.instrument)
        legs.append({"symbol": leg.symbol, "side": leg.side.value, "ratio": leg.ratio,
                     "bid": _f(bid), "ask": _f(ask), "mid": _f(risk.market.mid(leg.instrument))})
    mid, natural, _ = risk.combo_quote(order)
    limit = float(order.limit_price) if order.limit_price is not None else None
    pay = decision.payoff
    notes: list[str] = []
    if order.order_type.is_stop and order.stop_price is not None:
        then = f"a limit at {order.limit_price}" if order.limit_price is not None else "a market order"
        notes.append(f"{order.order_type.value.replace('_', '-')} order: rests until the net mark reaches "
                     f"{order.stop_price}, then works as {then}")
    if broker_preview is not None and broker_preview.buying_power_effect is not None:
        bp, bp_src = float(broker_preview.buying_power_effect), "broker"
        commission = _f(float(broker_preview.commission)) if broker_preview.commission is not None else None
        warnings = tuple(broker_preview.warnings) + tuple(broker_preview.errors)
    else:
        bp, bp_src, commission, warnings = -decision.buying_power_required, "estimate", None, ()
        if broker_preview is None:
            notes.append("broker preview unavailable: buying-power effect is our estimate")
    before, after = decision.current.to_dict(), decision.projected.to_dict()
    headroom: dict[str, dict[str, float | None]] = {}
    for r in decision.results:
        if r.limit is not None and r.value is not None and r.unit not in ("tokens", "s"):
            headroom[r.name] = {"value": _f(r.value), "limit": _f(r.limit),
                                "headroom": _f(r.limit - abs(r.value))}
    return ApprovalPreview(
        order_id=order.order_id, legs=tuple(legs), quantity=order.quantity, limit_price=limit, mid=_f(mid),
        natural=_f(natural), price_vs_mid=_f(limit - mid) if limit is not None else None,
        max_profit=_f(pay.max_profit) if pay else None, max_loss=_f(pay.max_loss) if pay else None,
        breakevens=pay.breakevens if pay else (), defined_risk=bool(pay and pay.defined_risk),
        stress_loss=_f(pay.stress_loss) if pay else None, buying_power_effect=_f(bp), buying_power_source=bp_src,
        commission=commission, broker_warnings=warnings, greeks_before=before, greeks_after=after,
        greeks_change={k: after[k] - before[k] for k in before}, headroom=headroom,
        checks=tuple(r.to_dict() for r in decision.results), created_at=now,
        expires_at=now + timedelta(seconds=expiry_s), notes=tuple(notes), order_type=order.order_type.value,
        stop_price=_f(float(order.stop_price)) if order.stop_price is not None else None,
    )


@dataclass
class PendingApproval:
    order: Order
    preview: ApprovalPreview
    timer: asyncio.TimerHandle | None = None


class ApprovalGate:
    """Holds pending approvals and records decisions. The OMS owns the order transitions."""

    def __init__(self, store: Store, *, now: Callable[[], datetime], enabled_paper: bool = False,
                 enabled_live: bool = True, expiry_s: float = 120.0) -> None:
        """``now``: the engine clock; decisions are stamped with it and the expiry is measured on it."""
        self.store = store
        self.now = now
        self.enabled = {"paper": enabled_paper, "live": enabled_live}
        self.expiry_s = expiry_s
        self.pending: dict[str, PendingApproval] = {}

    def required(self, mode: str) -> bool:
        return bool(self.enabled.get(mode, True))

    def set_enabled(self, mode: str, enabled: bool, by: str) -> None:
        self.enabled[mode] = bool(enabled)
        self.store.audit.record(by, "approval_mode", {"mode": mode, "enabled": bool(enabled)}, ts=self.now())

    def add(self, order: Order, preview: ApprovalPreview, on_expire: Callable[[str], None]) -> None:
        # the window is a human's time to decide: wall seconds on the loop, whatever speed the simulated
        # clock runs at (expires_at - now on a ×100 market clock would expire it in a second)
        delay = max(0.0, (preview.expires_at - preview.created_at).total_seconds())
        timer = asyncio.get_running_loop().call_later(delay, on_expire, order.order_id)
        self.pending[order.order_id] = PendingApproval(order, preview, timer)
        self._record(order.order_id, "pending", "system", "", {"expires_at": preview.expires_at.isoformat(),
                                                              "preview": preview.to_dict()})

    def update(self, order: Order, preview: ApprovalPreview | None = None) -> None:
        p = self.pending.get(order.order_id)
        if p is not None:
            p.order = order
            if preview is not None:
                p.preview = preview

    def decide(self, order_id: str, decision: str, by: str, reason: str = "",
               detail: dict[str, Any] | None = None) -> PendingApproval | None:
        """Remove a pending approval and record the decision (approved | rejected | expired | cancelled | modified)."""
        p = self.pending.pop(order_id, None) if decision != "modified" else self.pending.get(order_id)
        if p is not None and p.timer is not None and decision != "modified":
            p.timer.cancel()
        self._record(order_id, decision, by, reason, detail or {})
        return p

    def _record(self, order_id: str, decision: str, by: str, reason: str, detail: dict[str, Any]) -> None:
        now = self.now()
        ts = now.isoformat()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO approvals(order_id, decision, by, reason, ts, detail) VALUES (?,?,?,?,?,?)",
                (order_id, decision, by, reason, ts, json.dumps(detail, default=str, sort_keys=True)))
            self.store.audit.record(by, f"approval:{decision}", {"order_id": order_id, "reason": reason}, ts=now)

    def history(self, order_id: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT * FROM approvals WHERE order_id=? ORDER BY id", (order_id,))
        return [{"decision": r["decision"], "by": r["by"], "reason": r["reason"], "ts": r["ts"],
                 "detail": json.loads(r["detail"])} for r in rows]

    def close(self) -> None:
        for p in self.pending.values():
            if p.timer is not None:
                p.timer.cancel()
