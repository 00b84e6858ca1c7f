"""Core events shared across the engine. Package-specific events live with their packages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from engine.bus.messages import Event

if TYPE_CHECKING:
    from decimal import Decimal

    from engine.model import AccountSnapshot, Fill, OptionChain, Order, Position, Quote


# ---- market data ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteUpdated(Event):
    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    quote: Quote

    def conflation_key(self) -> object:
        return self.quote.symbol


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotesUpdated(Event):
    """A batch of option quotes for one underlying (columnar, matching ``chain`` row order)."""

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    underlying: str
    rows: Any  # np.ndarray of row indices into the current chain
    bid: Any
    ask: Any

    def conflation_key(self) -> object:
        return ("quotes", self.underlying, id(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnderlyingUpdated(Event):
    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    symbol: str
    price: float
    bid: float = float("nan")
    ask: float = float("nan")

    def conflation_key(self) -> object:
        return self.symbol


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainUpdated(Event):
    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    chain: OptionChain

    def conflation_key(self) -> object:
        return self.chain.underlying


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockTicked(Event):
    """The engine clock (simulated or wall) advanced; ``now`` is the market time."""

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    now: datetime
    market_open: bool = False

    def conflation_key(self) -> object:
        return "clock"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStatus(Event):
    """What the market is doing, published by the engine every clock interval: the engine's market time
    and session, and — because a simulated session often runs while the real market is shut — whether
    the real (wall-clock) market is open and when it opens next."""

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    now: datetime
    market_open: bool
    simulated: bool
    real_open: bool | None = None  # None: unknown (no market calendar covers the wall clock)
    real_next_open: datetime | None = None

    def conflation_key(self) -> object:
        return "session"

    def describe(self) -> str:
        from engine.clock import format_market_time as fmt

        if not self.simulated:
            return f"market {'open' if self.market_open else 'closed'} · {fmt(self.now)}"
        text = f"simulated session {fmt(self.now)}" if self.market_open else f"simulated market closed · {fmt(self.now)}"
        if self.real_open is None:
            return text
        if self.real_open:
            return f"{text} — real market open"
        nxt = f" (opens {fmt(self.real_next_open)})" if self.real_next_open is not None else ""
        return f"{text} — real market closed{nxt}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedClockMoved(Event):
    """The simulated market's clock was moved by a command (restart of the day, jump to the real session)."""

    severity: ClassVar[str] = "warning"
    action: str  # restart_day | jump_to_real_session
    previous: datetime
    now: datetime
    by: str = "user"

    def describe(self) -> str:
        from engine.clock import format_market_time as fmt

        what = {"restart_day": "simulated day restarted", "jump_to_real_session": "simulated market jumped to "
                "the real session"}.get(self.action, self.action)
        return f"{what}: {fmt(self.previous)} → {fmt(self.now)} (by {self.by})"


# ---- orders --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent(Event):
    order: Order

    def describe(self) -> str:
        o = self.order
        legs = " / ".join(f"{leg.side.value} {leg.ratio} {leg.symbol}" for leg in o.legs)
        return f"{type(self).__name__}: {o.quantity}× [{legs}] {o.status.value}" + (f" — {o.reason}" if o.reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCreated(OrderEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPendingApproval(OrderEvent):
    severity: ClassVar[str] = "warning"
    preview: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderApproved(OrderEvent):
    by: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDenied(OrderEvent):
    """Our risk engine (or the approver, or the kill switch) said no. ``checks`` holds every failed check."""

    severity: ClassVar[str] = "warning"
    checks: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSubmitted(OrderEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAccepted(OrderEvent):
    """The broker acknowledged the order; it is working."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(OrderEvent):
    """The broker, or the human approver, said no; ``order.reason`` carries who and why."""

    severity: ClassVar[str] = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(OrderEvent):
    """A (possibly partial) fill; ``fills`` are the leg executions of this report."""

    fills: tuple[Fill, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelled(OrderEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderReplaced(OrderEvent):
    previous_price: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderReplaceRejected(OrderEvent):
    """The broker refused a replace: the order keeps working on its previous terms (``order`` carries them,
    ``order.reason`` the broker's message). Not an ``OrderRejected``: the order itself was not rejected."""

    severity: ClassVar[str] = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    pass


# ---- account -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class PositionChanged(Event):
    """A position of ``broker``'s account changed (quantity 0 = closed)."""

    position: Position
    broker: str = ""

    def describe(self) -> str:
        p = self.position
        return f"Position {p.symbol}: {p.quantity:+d} @ {p.avg_price}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUpdated(Event):
    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    account: AccountSnapshot

    def conflation_key(self) -> object:
        return self.account.account_id


# ---- state, mode, connections --------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TradingStateChanged(Event):
    severity: ClassVar[str] = "warning"
    state: str  # ACTIVE | REDUCING | HALTED
    previous: str = ""
    reason: str = ""

    def describe(self) -> str:
        return f"Trading state {self.previous} → {self.state}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitchTripped(Event):
    severity: ClassVar[str] = "critical"
    reason: str
    by: str = "user"
    flatten: bool = False
    cancelled_orders: int = 0

    def describe(self) -> str:
        return f"KILL SWITCH TRIPPED by {self.by}: {self.reason} ({self.cancelled_orders} orders cancelled)"


@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitchReset(Event):
    severity: ClassVar[str] = "warning"
    by: str = "user"

    def describe(self) -> str:
        return f"Kill switch reset by {self.by}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChanged(Event):
    severity: ClassVar[str] = "warning"
    mode: str  # paper | live
    broker: str = "paper"
    account_id: str = ""

    def describe(self) -> str:
        return f"Mode is now {self.mode.upper()} ({self.broker}{' ' + self.account_id if self.account_id else ''})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalModeChanged(Event):
    enabled: bool

    def describe(self) -> str:
        return f"Manual approval {'ON' if self.enabled else 'OFF'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskProfileChanged(Event):
    level: float
    profile: Any  # engine.risk.profile.RiskProfile

    def describe(self) -> str:
        return f"Risk level set to {self.level:.0f}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStateChanged(Event):
    """A feed or broker connection changed. ``state``: connecting | connected | disconnected | failed."""

    component: str  # e.g. "feed:simulated", "broker:tastytrade"
    state: str
    detail: str = ""
    latency_ms: float | None = None

    def describe(self) -> str:
        return f"{self.component}: {self.state}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedChanged(Event):
    """The engine's market-data feed was swapped (a broker connected or disconnected)."""

    severity: ClassVar[str] = "warning"
    feed: str
    underlyings: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"Market data now from {self.feed}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert(Event):
    """A message for the user. ``level``: info | warning | error | critical."""

    level: str = "info"
    message: str = ""
    source: str = ""

    def describe(self) -> str:
        return f"[{self.level.upper()}] {self.source + ': ' if self.source else ''}{self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberFailed(Event):
    """A subscriber raised; the bus isolated it. Never delivered back to the failing subscriber."""

    severity: ClassVar[str] = "error"
    subscriber: str
    event_type: str
    error: str

    def describe(self) -> str:
        return f"Subscriber {self.subscriber} failed on {self.event_type}: {self.error}"


# ---- strategies (engine/strategies/host.py; docs/strategies.md) ----------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyStateChanged(Event):
    """A hosted strategy changed state: ``state`` is one of stopped | running | paused | disabled.
    ``mode`` is the account it trades on (paper | live); ``reason`` says why (a command, the kill switch...)."""

    strategy_id: str
    name: str
    state: str
    previous: str = ""
    mode: str = "paper"
    reason: str = ""

    def describe(self) -> str:
        return (f"Strategy {self.strategy_id}: {self.previous or 'new'} → {self.state} ({self.mode})"
                + (f": {self.reason}" if self.reason else ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategySignal(Event):
    """A strategy decided something: ``action`` (open | close | none), its ``confidence`` in [0, 1] (NaN when the
    strategy states none) and the ``reason`` in words; ``tag`` names the trade."""

    strategy_id: str
    action: str
    confidence: float = float("nan")
    reason: str = ""
    tag: str = ""
    #: the ML filter's calibrated P(win) for this entry (NaN: no ML filter, or none) and its reason
    ml_probability: float = float("nan")
    ml_reason: str = ""

    def describe(self) -> str:
        conf = "" if self.confidence != self.confidence else f" ({self.confidence:.0%})"
        ml = f"; {self.ml_reason}" if self.ml_reason else ""
        return f"Strategy {self.strategy_id} {self.action}{conf}: {self.reason}{ml}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyDisabled(Event):
    """A strategy stopped trading on its own (an exception, a bad settings entry); the strategy host publishes
    it and the notifier's ``strategy_disabled`` rule turns it into a notification."""

    severity: ClassVar[str] = "error"
    strategy_id: str
    reason: str = ""

    def describe(self) -> str:
        return f"strategy {self.strategy_id} disabled: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineStarted(Event):
    mode: str = "paper"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineStopping(Event):
    pass


# ---- imported chains and stored data (engine/chainstore/service.py; docs/data.md) -----------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ChainImportProgress(Event):
    """How far a chain import is: ``fraction`` of its files' bytes read (0..1) and a line of text."""

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    job_id: str
    fraction: float
    text: str = ""

    def conflation_key(self) -> object:
        return self.job_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainImportFinished(Event):
    """A chain import ended: ``report`` (rows read, written, already stored, dropped by reason, roots) is
    what was done — also when ``cancelled`` or when ``error`` names the file that could not be read."""

    job_id: str
    report: dict[str, Any] | None = None
    error: str = ""
    cancelled: bool = False

    # every other event's severity is its class's; this one's depends on the outcome, so a property overrides
    # the base's ClassVar (read as ``event.severity`` everywhere, which both forms answer)
    @property
    def severity(self) -> str:  # type: ignore[override]
        return "error" if self.error else "info"

    def describe(self) -> str:
        r = self.report or {}
        done = f"{r.get('rows_written', 0):,} rows stored, {r.get('already_stored', 0):,} already stored"
        if self.error:
            return f"Chain import failed: {self.error} ({done})"
        if self.cancelled:
            return f"Chain import cancelled ({done})"
        roots = ", ".join(r.get("roots", {})) or "no roots"
        return f"Chains imported for {roots}: {done}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainsDeleted(Event):
    """Imported days of ``root`` in [start, end] were deleted (``rows`` rows)."""

    root: str
    start: Any = None
    end: Any = None
    rows: int = 0

    def describe(self) -> str:
        span = f" from {self.start or 'the first day'} to {self.end or 'the last day'}"
        return f"Deleted {self.rows:,} imported rows of {self.root}{span}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataCoverageChanged(Event):
    """The stored chains or daily history changed; ``engine_queries.data_coverage`` has the new snapshot."""

    severity: ClassVar[str] = "debug"
    roots: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()


# ---- ML models (engine/ml/service.py; docs/ml.md) ---------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class MLJobProgressed(Event):
    """A training or evaluation job's stage (``queued``, ``running``) and seconds since it started; the job
    runs in a worker process, so its progress is its stage and elapsed time, not a fraction."""

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    job_id: str
    kind: str  # train | evaluate
    name: str
    stage: str
    elapsed_s: float = 0.0

    def conflation_key(self) -> object:
        return self.job_id


@dataclass(frozen=True, slots=True, kw_only=True)
class MLJobFinished(Event):
    """A training or evaluation job ended: ``summary`` holds its headline numbers (AUC and interval, Brier,
    verdict, registered version), or ``error`` says why it failed."""

    job_id: str
    kind: str
    name: str
    summary: dict[str, Any] | None = None
    error: str = ""

    def describe(self) -> str:
        if self.error:
            return f"ML {self.kind} {self.name} failed: {self.error}"
        s = self.summary or {}
        auc = s.get("auc")
        return (f"ML {self.kind} {self.name}: " + (f"AUC {auc:.3f}, " if isinstance(auc, float) else "")
                + str(s.get("verdict", "done")))


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceWalkUpdated(Event):
    """A price walk (engine/oms/price_walk.py) started, stepped or ended. ``state``: walking | ended; ``price`` is
    the order's limit now, ``reason`` why it ended (filled, cancelled, kill switch, disconnected, refused ...)."""

    order_id: str
    state: str
    price: Decimal | None
    limit: Decimal
    steps: int = 0
    reason: str = ""

    def describe(self) -> str:
        if self.state == "ended":
            return f"price walk of {self.order_id} ended after {self.steps} steps: {self.reason}"
        return f"price walk of {self.order_id}: {self.price} (limit {self.limit}, {self.steps} steps)"
