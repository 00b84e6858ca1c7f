"""Managed trades: the exit rules and limit-price walk as data, and the books a managed strategy keeps.

:class:`ManagementRules` and :class:`PriceWalk` are parameter groups every strategy carries (validated by
pydantic, swept by the optimiser); :class:`OpenTrade` and its JSON form are the state that must survive a
restart. They are data and pure functions of it, split from :mod:`engine.strategies.base` (which still
exports them) so that module holds the Strategy API and :class:`~engine.strategies.base.ManagedStrategy` only.

Sign conventions (docs/architecture.md §7): a trade's P&L per unit is ``value_now − entry_net`` where both are
Σ signed_ratio × price (credit < 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.model import Leg
from engine.strategies.legs import market_date


# ---- position management rules as data ---------------------------------------------------------------
class ManagementRules(BaseModel):
    """When to close an open trade. ``None`` disables a rule. Defaults from trading-rules.md.

    - ``profit_target``: close when P&L ≥ this fraction of the trade's max profit (0.5 = 50 %);
    - ``stop_multiple``: close when the loss ≥ this multiple of the credit received (credit trades)
      or of the debit paid (debit trades);
    - ``dte_exit``: close when calendar days to expiry ≤ this;
    - ``time_exit_fraction``: close when this fraction of the time from entry to expiry has elapsed;
    - ``regime_exits``: pairs (entry regime, current regime) that force a close, e.g. low_vol → high_vol.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profit_target: float | None = Field(0.5, gt=0)
    stop_multiple: float | None = Field(2.0, gt=0)
    dte_exit: int | None = Field(21, ge=0)
    time_exit_fraction: float | None = Field(None, gt=0, le=1)
    regime_exits: tuple[tuple[str, str], ...] = (("low_vol", "high_vol"),)

    @field_validator("regime_exits", mode="before")
    @classmethod
    def _none_is_no_pairs(cls, value: Any) -> Any:
        """``none`` switches this rule off like every other (an empty set of pairs)."""
        return () if value is None else value

    def exit_reason(self, trade: OpenTrade, value_now: float, now: datetime, regime: str) -> str | None:
        """The first rule that fires for ``trade`` marked at ``value_now`` (per unit), or None."""
        pnl = value_now - trade.entry_net
        if self.profit_target is not None and trade.max_profit > 0 and pnl >= self.profit_target * trade.max_profit - 1e-9:
            return "profit_target"
        if self.stop_multiple is not None:
            basis = abs(trade.entry_net)
            if basis > 0 and pnl <= -self.stop_multiple * basis + 1e-9:
                return "stop"
        days_left = (trade.expiry - market_date(now)).days
        if self.dte_exit is not None and days_left <= self.dte_exit:
            return "dte_exit"
        if self.time_exit_fraction is not None and trade.opened_at is not None:
            total = (trade.expiry - market_date(trade.opened_at)).days
            if total > 0 and (total - days_left) >= self.time_exit_fraction * total:
                return "time_exit"
        if (trade.entry_regime, regime) in self.regime_exits:
            return "regime_shift"
        return None


# ---- strategy-side trade bookkeeping -----------------------------------------------------------------
@dataclass(slots=True)
class OpenTrade:
    """One multi-leg position the strategy opened and manages (per unit = one combo)."""

    tag: str
    legs: tuple[Leg, ...]
    quantity: int
    expiry: Any  # datetime.date of the nearest leg expiry
    entry_net: float = math.nan  # Σ signed_ratio × fill price per unit (credit < 0)
    max_profit: float = math.nan  # per unit, price units
    max_loss: float = math.nan  # per unit, price units (positive)
    opened_at: datetime | None = None
    entry_regime: str = ""
    state: str = "opening"  # opening | open | closing | closed
    filled: int = 0
    exit_reason: str = ""
    info: dict[str, float] = field(default_factory=dict)
    close_attempt: int = 0  # closing orders that ended unfilled (the walk's step for the next one)
    close_not_before: datetime | None = None


class PriceWalk(BaseModel):
    """How a strategy prices a limit: from mid, one step toward natural per attempt.

    An attempt is one order; when it ends unfilled (a DAY order expires at the close) the next attempt, no
    sooner than ``interval_s`` later, is priced one ``step`` (a fraction of the mid → natural distance)
    closer to natural. Entries stop at ``entry_max`` of the way and never beyond the risk profile's price
    collar; exits reach natural (where the collar always lets a closing order through). Exits whose reason
    is in ``urgent_exits`` go at natural at once: a stop does not wait for the walk.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(0.0, ge=0, le=1)
    step: float = Field(0.5, gt=0, le=1)
    interval_s: float = Field(0.0, ge=0)
    entry_max: float = Field(1.0, ge=0, le=1)
    urgent_exits: tuple[str, ...] = ("stop", "regime_shift")

    def fraction(self, attempt: int, *, entry: bool) -> float:
        """Where attempt ``attempt`` (0 = first) sits between mid (0) and natural (1)."""
        f = min(self.start + attempt * self.step, 1.0)
        return min(f, self.entry_max) if entry else f


def walk_price(mid: float, natural: float, fraction: float, tick: float, collar: tuple[int, float] | None) -> float:
    """A limit (debit > 0, credit < 0) ``fraction`` of the way from ``mid`` to ``natural``, on the tick grid,
    never beyond natural and, with ``collar`` (ticks, fraction of |mid|), never further from mid than it allows.

    Rounded toward mid: a price between ticks must not end up past the bound it was clamped to.
    """
    price = mid + fraction * (natural - mid)
    worse = 1.0 if natural >= mid else -1.0  # the side on which prices are worse for us
    if collar is not None:
        allowed = max(collar[0] * tick, collar[1] * abs(mid))
        price = mid + worse * min(worse * (price - mid), allowed)
    steps = price / tick
    if abs(steps - round(steps)) < 1e-6:
        steps = round(steps)  # 1.60 / 0.01 is 160.00000000000003 in binary: on the grid, not past it
    snapped = (math.floor(steps + 1e-9) if worse > 0 else math.ceil(steps - 1e-9)) * tick
    return round(snapped, 10)


def trade_to_dict(t: OpenTrade) -> dict[str, Any]:
    """An :class:`OpenTrade` as JSON-able data (legs with their full contract terms). Floats stay floats, NaN and
    infinity included (Python's json writes and reads them): "not known yet" and "unbounded" differ."""
    from engine.store.repositories import legs_to_json

    def num(x: float) -> float:
        return float(x)

    return {"tag": t.tag, "legs": legs_to_json(t.legs), "quantity": t.quantity, "expiry": t.expiry.isoformat(),
            "entry_net": num(t.entry_net), "max_profit": num(t.max_profit), "max_loss": num(t.max_loss),
            "opened_at": t.opened_at.isoformat() if t.opened_at else None, "entry_regime": t.entry_regime,
            "state": t.state, "filled": t.filled, "exit_reason": t.exit_reason,
            "info": {k: num(float(v)) for k, v in t.info.items()}, "close_attempt": t.close_attempt,
            "close_not_before": t.close_not_before.isoformat() if t.close_not_before else None}


def trade_from_dict(d: dict[str, Any]) -> OpenTrade:
    from engine.store.repositories import legs_from_json

    def num(x: Any, default: float = math.nan) -> float:
        return default if x is None else float(x)

    def ts(x: Any) -> datetime | None:
        return datetime.fromisoformat(x) if x else None

    return OpenTrade(tag=str(d["tag"]), legs=legs_from_json(d["legs"]), quantity=int(d["quantity"]),
                     expiry=date.fromisoformat(d["expiry"]), entry_net=num(d.get("entry_net")),
                     max_profit=num(d.get("max_profit")), max_loss=num(d.get("max_loss")),
                     opened_at=ts(d.get("opened_at")), entry_regime=str(d.get("entry_regime", "")),
                     state=str(d.get("state", "open")), filled=int(d.get("filled", 0)),
                     exit_reason=str(d.get("exit_reason", "")),
                     info={k: num(v) for k, v in (d.get("info") or {}).items()},
                     close_attempt=int(d.get("close_attempt", 0)), close_not_before=ts(d.get("close_not_before")))
