"""Core commands. Each is addressed to exactly one registered handler (see :class:`engine.bus.Bus`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.bus.messages import Command
from engine.model import OrderIntent


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitOrder(Command):
    intent: OrderIntent


@dataclass(frozen=True, slots=True, kw_only=True)
class ApproveOrder(Command):
    order_id: str
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectOrder(Command):
    order_id: str
    reason: str = "rejected by approver"
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModifyOrderPrice(Command):
    order_id: str
    limit_price: Decimal
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder(Command):
    order_id: str
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAllOrders(Command):
    reason: str = "user request"
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceOrder(Command):
    order_id: str
    limit_price: Decimal
    quantity: int | None = None
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRiskLevel(Command):
    level: float  # 0..100


@dataclass(frozen=True, slots=True, kw_only=True)
class TripKillSwitch(Command):
    reason: str
    flatten: bool = False
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetKillSwitch(Command):
    by: str = "user"
    confirmed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SwitchMode(Command):
    """Switch paper/live. Live requires ``confirmed_account_id`` equal to the broker account shown to the user."""

    mode: str  # paper | live
    broker: str = "paper"
    confirmed_account_id: str | None = None
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetApprovalMode(Command):
    enabled: bool
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunBacktest(Command):
    config: Any
    run_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelBacktest(Command):
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectUnderlying(Command):
    """Ask the feed to stream an underlying's chain (and optionally only a strike window)."""

    symbol: str
    expiries: tuple[Any, ...] = ()
    strikes: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartSimulatedDay(Command):
    """Back to the open of the simulated session now running, replaying that day's price path from its
    open (same seed state). Audited. Refused when the simulated market is not the running feed."""

    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class JumpToNextRealSession(Command):
    """Move the simulated market to the open of the real (wall-clock) session that is running now or
    opens next, so the simulation trades the same day as the real market. Audited."""

    by: str = "user"
