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
class SubmitBracket(Command):
    """Open with ``intent`` and, once it has filled, close it with a one-cancels-other pair: a GTC limit at
    ``take_profit`` and a GTC stop at ``stop`` (a stop-limit when ``stop_limit`` is set). The exit prices are the
    closing order's net price (+ debit / − credit): a call bought at 2.00 might exit at −3.00 (target) or −1.00
    (stop). Answers the :class:`~engine.model.OrderGroup` (docs/risk-and-orders.md, "Order groups")."""

    intent: OrderIntent
    take_profit: Decimal
    stop: Decimal
    stop_limit: Decimal | None = None
    #: place entry and exits at the venue at once when the broker supports it (tastytrade OTOCO, IBKR parent and
    #: children), sized to the entry's full quantity; None = the order group manager's default (off)
    native: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitOco(Command):
    """Two orders, each through the order path, of which the first to fill (or to end) cancels the other.
    Answers the :class:`~engine.model.OrderGroup`."""

    first: OrderIntent
    second: OrderIntent


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitProfitTaker(Command):
    """Open with ``intent`` and, once it has filled, place a GTC closing limit at ``profit_pct`` (0 < x < 1) of
    its maximum profit: a credit of C closes at a debit of (1 − x) × C; a debit of D at a credit of (1 + x) × D.
    The closing order is cancelled when the position is closed otherwise. Answers the
    :class:`~engine.model.OrderGroup`."""

    intent: OrderIntent
    profit_pct: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrderGroup(Command):
    """Cancel every open member of a group and drop exits not yet placed. Answers the group."""

    group_id: str
    by: str = "user"


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


# ---- strategies (engine/strategies/host.py; docs/strategies.md) ----------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StartStrategy(Command):
    """Run (or resume) one strategy of the settings on its own mode's account. Audited."""

    strategy_id: str
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseStrategy(Command):
    """Stop opening and managing trades; state, open trades and working orders are kept. Audited."""

    strategy_id: str
    reason: str = "paused by user"
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopStrategy(Command):
    """Stop a strategy and, with ``cancel_orders``, cancel its working orders. Open trades stay in its books
    (and in the account) until it runs again. Audited."""

    strategy_id: str
    cancel_orders: bool = True
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetStrategyParams(Command):
    """Replace a strategy's parameters (validated against its parameter model; a bad one is refused with the
    model's message and nothing changes). Open trades are kept and managed under the new rules. Audited."""

    strategy_id: str
    params: dict[str, Any]
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetStrategyMode(Command):
    """Move a strategy between the paper account and a live account. ``live`` needs ``confirm_account`` equal
    to the live broker's account id (the same confirmation as the engine's own switch); refused otherwise,
    and a strategy with open trades or working orders cannot change account. Audited either way."""

    strategy_id: str
    mode: str  # paper | live
    confirm_account: str | None = None
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListExpirations(Command):
    """The expiries the current feed lists for an underlying (sorted); a view asks before it subscribes,
    so it never calls the feed itself and the answer follows a feed swap."""

    symbol: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSymbols(Command):
    """Symbols starting with ``prefix`` from the current feed (a connected broker's symbol search, or the simulated
    market's own list); answers a list of ``engine.market.symbols.SymbolMatch``, best first. A bad prefix or limit
    raises ``SymbolSearchError`` naming it."""

    prefix: str
    limit: int = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplySettings(Command):
    """Make ``settings`` (an ``engine.settings.Settings``) the engine's: saved to the settings file, swapped
    into ``Engine.settings``, and applied by each running component that owns a changed value. The handler
    returns :class:`SettingsApplied`, naming what waits for the next start."""

    settings: Any
    save: bool = True
    by: str = "user"


@dataclass(frozen=True, slots=True)
class SettingsApplied:
    """What :class:`ApplySettings` did, as dotted keys (``risk.level``, ``oms.approval_in_paper``)."""

    path: str | None
    applied: tuple[str, ...] = ()
    at_restart: tuple[str, ...] = ()


# ---- imported chains and stored data (engine/chainstore/service.py; docs/data.md) -----------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ImportChains(Command):
    """Import vendor chain files (Cboe DataShop, OptionsDX, native) into the chain store, off the loop; the
    handler returns the job id at once, progress and the end come as ``ChainImportProgress`` and
    ``ChainImportFinished``. One import at a time: a second is refused while one runs. Audited."""

    paths: tuple[str, ...]
    fmt: str = "auto"  # auto | cboe | optionsdx | native
    symbol: str | None = None  # the underlying of files without one (OptionsDX)
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelImport(Command):
    """Stop a running import between chunks: completed months stay, the month being read is not written."""

    job_id: str = ""  # empty: whichever import runs


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteChains(Command):
    """Delete an imported root's days in [start, end] (all of them without bounds); returns the rows
    removed. Audited."""

    root: str
    start: Any = None  # datetime.date | None
    end: Any = None
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshDataCoverage(Command):
    """Rescan the stored chains and daily history (off the loop); returns the new ``DataCoverage``."""


# ---- price walking (engine/oms/price_walk.py; docs/risk-and-orders.md) ----------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StartPriceWalk(Command):
    """Walk a working limit order from its price (the ticket starts it at mid) toward natural: every ``interval_s``
    seconds of engine time one replace through the order path, ``step`` dollars further (or ``step_fraction`` of
    the quoted spread), never past natural nor past ``limit`` (+ debit / − credit: walking raises the signed
    price). Ends on fill, cancel, kill switch or disconnect. Answers the walk's first ``PriceWalkUpdated``."""

    order_id: str
    interval_s: float
    limit: Decimal
    step: Decimal | None = None
    step_fraction: float | None = None
    by: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopPriceWalk(Command):
    """Stop walking an order; it keeps working at its last price. Answers the final ``PriceWalkUpdated``."""

    order_id: str
    by: str = "user"
