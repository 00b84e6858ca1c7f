"""Orders, legs, fills, positions and account snapshots.

Sign conventions (docs/architecture.md §7):
- position quantity: positive long, negative short;
- a leg's ``ratio`` is a positive integer, its direction is ``side``;
- an order's ``limit_price`` is the net price per unit of the combo: positive = debit (we pay),
  negative = credit (we receive), quoted in :func:`price_multiplier` (per share of a contract when an option
  is in the order: a covered call of 100 shares at 500 and a call at 5 is a 495.00 debit). Use
  :func:`net_price_label` to show it.
- a stop order's ``stop_price`` is signed like a limit, on the same net price: it triggers when the order's net
  price at the mark reaches it from below (:func:`stop_triggered`) — a buy stop above the market (+2.00 buys when
  the option rises to 2.00), a sell stop below it (−1.00 sells when the option falls to 1.00), a debit spread's
  closing stop when the spread's debit rises to it. One rule for every side and every combo, so nothing needs
  to know which way a stop "faces".
- fill ``quantity`` is signed like a position change (buy +, sell −).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from engine.model.instruments import Equity, Index, Instrument, Option


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OpenClose(StrEnum):
    OPEN = "open"
    CLOSE = "close"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"
    STOP = "stop"  # a market order once the stop triggers
    STOP_LIMIT = "stop_limit"  # a limit order (at ``limit_price``) once the stop triggers

    @property
    def is_stop(self) -> bool:
        return self in (OrderType.STOP, OrderType.STOP_LIMIT)

    @property
    def has_limit(self) -> bool:
        """Whether the order carries a limit price (a limit, or a stop-limit once triggered)."""
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT)


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"


class OrderStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    SUBMITTED = "submitted"
    WORKING = "working"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    DENIED = "denied"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_working(self) -> bool:
        """Live at a broker (or about to be): counts toward exposure and blocks mode switches."""
        return self in (OrderStatus.SUBMITTED, OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED)


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
)

#: Allowed transitions of the order state machine (docs/architecture.md §4).
ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_APPROVAL: frozenset(
        {OrderStatus.APPROVED, OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
    OrderStatus.APPROVED: frozenset({OrderStatus.SUBMITTED, OrderStatus.DENIED, OrderStatus.CANCELLED, OrderStatus.REJECTED}),
    OrderStatus.SUBMITTED: frozenset(
        {OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.REJECTED,
         OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
    OrderStatus.WORKING: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED,
         OrderStatus.REJECTED, OrderStatus.WORKING}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
}


def can_transition(src: OrderStatus, dst: OrderStatus) -> bool:
    return dst in ORDER_TRANSITIONS.get(src, frozenset())


def round_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    """Round a price to the nearest multiple of ``tick`` (half away from zero)."""
    if tick <= 0:
        raise ValueError(f"tick size must be positive, got {tick}")
    units = (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return (units * tick).quantize(tick)


def is_on_tick(price: Decimal, tick: Decimal) -> bool:
    return (price / tick) == (price / tick).to_integral_value()


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of an order: ``ratio`` units of ``instrument`` per unit of order quantity."""

    instrument: Instrument
    side: Side
    ratio: int = 1
    open_close: OpenClose = OpenClose.OPEN

    def __post_init__(self) -> None:
        if not isinstance(self.ratio, int) or self.ratio <= 0:
            raise ValueError(f"leg ratio must be a positive integer, got {self.ratio!r}")

    @property
    def signed_ratio(self) -> int:
        return self.side.sign * self.ratio

    @property
    def symbol(self) -> str:
        return self.instrument.key

    @property
    def multiplier(self) -> int:
        return self.instrument.multiplier


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What somebody wants to trade, before the order path has given it ids or checked it.

    ``source`` says where it came from (``gui``, ``strategy:<id>``, ``backtest``, ``kill_switch``).
    """

    legs: tuple[Leg, ...]
    quantity: int
    order_type: OrderType = OrderType.LIMIT
    limit_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    source: str = "gui"
    strategy_id: str | None = None
    tag: str = ""
    client_order_id: str | None = None  # set when resubmitting, so the broker can dedupe
    stop_price: Decimal | None = None  # STOP / STOP_LIMIT only: the trigger, on the net price (module docstring)


@dataclass(frozen=True, slots=True)
class Order:
    """An order on the order path. Immutable: a state change is a new ``Order`` (``evolve``)."""

    order_id: str
    client_order_id: str
    legs: tuple[Leg, ...]
    quantity: int
    order_type: OrderType
    limit_price: Decimal | None
    tif: TimeInForce
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    source: str = "gui"
    strategy_id: str | None = None
    tag: str = ""
    filled_quantity: int = 0
    avg_fill_price: Decimal | None = None
    broker_order_id: str | None = None
    broker: str = "paper"
    reason: str = ""
    account_id: str = ""
    stop_price: Decimal | None = None

    @property
    def underlying(self) -> str:
        inst = self.legs[0].instrument
        return inst.underlying if isinstance(inst, Option) else inst.symbol

    @property
    def is_combo(self) -> bool:
        return len(self.legs) > 1

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity

    def evolve(self, *, updated_at: datetime, **changes: Any) -> Order:
        """A changed copy. ``updated_at`` is required: only whoever changes the order knows the time
        on its clock (the engine's, a broker's report time); a default would be the wall clock."""
        if updated_at.tzinfo is None:
            raise ValueError("an order's updated_at must be timezone-aware")
        return replace(self, updated_at=updated_at, **changes)


class GroupKind(StrEnum):
    OCO = "oco"  # two working orders; the first to fill (or to end) cancels the other
    BRACKET = "bracket"  # an entry, then a profit target and a stop, OCO between them, once the entry fills
    PROFIT_TAKER = "profit_taker"  # an entry, then a closing limit at a share of its max profit once it fills


class GroupStatus(StrEnum):
    ACTIVE = "active"
    DONE = "done"  # every member ended
    CANCELLED = "cancelled"  # cancelled, or its entry ended without a fill: exits never placed

    @property
    def is_terminal(self) -> bool:
        return self is not GroupStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class OrderGroup:
    """Orders that act on each other (docs/risk-and-orders.md, "Order groups"). Each member is an ordinary
    order on the one order path; the group only says when members are placed and which cancel which.

    ``held`` are the exits of a bracket or profit taker while the entry has not filled: intents, not orders,
    because an order that cannot work yet must not reserve risk or reach a broker. ``member_order_ids`` are
    the placed one-cancels-other members (an OCO's two orders, a bracket's exits, a profit taker's close)."""

    group_id: str
    kind: GroupKind
    status: GroupStatus
    created_at: datetime
    updated_at: datetime
    entry_order_id: str | None = None
    entry_client_order_id: str = ""  # chosen before the entry is sent: a crash in between still finds it
    member_order_ids: tuple[str, ...] = ()
    held: tuple[OrderIntent, ...] = ()
    profit_pct: Decimal | None = None
    source: str = "gui"
    reason: str = ""

    def evolve(self, *, updated_at: datetime, **changes: Any) -> OrderGroup:
        if updated_at.tzinfo is None:
            raise ValueError("a group's updated_at must be timezone-aware")
        return replace(self, updated_at=updated_at, **changes)


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution of one leg. ``quantity`` signed (buy +, sell −); ``price`` per unit, Decimal."""

    fill_id: str
    order_id: str
    instrument: Instrument
    quantity: int
    price: Decimal
    ts: datetime
    fee: Decimal = Decimal(0)
    leg_index: int = 0
    client_order_id: str = ""
    kind: str = "trade"  # trade | exercise | assignment | expiration | cash_settlement | early_assignment

    @property
    def cash_flow(self) -> Decimal:
        """Money in (+) or out (−) of the account, fees included."""
        return -Decimal(self.quantity) * self.price * self.instrument.multiplier - self.fee


@dataclass(frozen=True, slots=True)
class Position:
    """A holding. ``avg_price`` per unit (per share / per option price unit, not × multiplier)."""

    instrument: Instrument
    quantity: int
    avg_price: Decimal
    realized_pnl: Decimal = Decimal(0)
    opened_at: datetime | None = None
    strategy_id: str | None = None

    @property
    def symbol(self) -> str:
        return self.instrument.key

    @property
    def multiplier(self) -> int:
        return self.instrument.multiplier

    @property
    def cost_basis(self) -> Decimal:
        return Decimal(self.quantity) * self.avg_price * self.multiplier

    def market_value(self, mark: float) -> float:
        return self.quantity * mark * self.multiplier

    def unrealized_pnl(self, mark: float) -> float:
        return self.quantity * (mark - float(self.avg_price)) * self.multiplier


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    account_id: str
    cash: Decimal
    net_liquidation: Decimal
    buying_power: Decimal
    maintenance_requirement: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    day_pnl: Decimal = Decimal(0)
    ts: datetime | None = None  # when the broker reported it, on the engine's clock
    broker: str = "paper"
    is_live: bool = False


def price_multiplier(legs: tuple[Leg, ...] | list[Leg]) -> int:
    """The multiplier an order's net price is quoted in: the first option leg's when there is one, else 1.

    Why: a covered call (buy 100 shares, sell 1 call) is quoted per share, as on a broker's ticket —
    stock price − call price, e.g. 495.00 for shares at 500 and the call at 5 — so one unit of the order
    costs ``net × 100`` dollars whether or not shares are in it, and option-only combos keep their usual
    per-contract-share net."""
    for leg in legs:
        if isinstance(leg.instrument, Option):
            return leg.instrument.multiplier
    return 1


def leg_weights(legs: tuple[Leg, ...] | list[Leg]) -> tuple[Decimal, ...]:
    """Per leg, how much one unit of its price moves the order's net price: ±ratio × multiplier ÷ the
    order's :func:`price_multiplier` (so ±ratio for option-only combos and single legs; ±ratio / 100 for
    the shares of a mixed order: 100 shares at 500 add 500 to a covered call's net)."""
    m = Decimal(price_multiplier(legs))
    return tuple(Decimal(leg.side.sign * leg.ratio * leg.instrument.multiplier) / m for leg in legs)


def net_price(legs: tuple[Leg, ...] | list[Leg], prices: list[Decimal] | tuple[Decimal, ...]) -> Decimal:
    """The net price per unit (+ debit / − credit) of ``legs`` filled at ``prices`` (per unit of each leg)."""
    return sum((w * p for w, p in zip(leg_weights(legs), prices, strict=True)), Decimal(0))


def stop_triggered(stop_price: Decimal | float, net_mark: float) -> bool:
    """Whether a stop at ``stop_price`` has triggered with the order's net price at the mark ``net_mark`` (both
    + debit / − credit): the net has risen to the stop. A buy stop at 2.00 triggers at a mark of 2.00 or more, a
    sell stop at −1.00 when the option's mark falls to 1.00 (net −1.00 ≥ −1.00)."""
    return net_mark >= float(stop_price) - 1e-9


def worst_price(order_type: OrderType, limit_price: Decimal | None, stop_price: Decimal | None) -> Decimal | None:
    """The net price an order is expected to fill at no worse than, for risk (max loss, collar): the limit of
    a limit or stop-limit, the stop of a stop order (it becomes a market order there), none for a market order."""
    if order_type.has_limit:
        return limit_price
    if order_type is OrderType.STOP:
        return stop_price
    return None


#: the tag of an order that belongs to a one-cancels-other group (``oco:<group id>``): the risk engine counts
#: the quantity such siblings close only once, since at most one of them can fill
OCO_TAG_PREFIX = "oco:"


def oco_group_of(tag: str) -> str | None:
    """The one-cancels-other group an order's ``tag`` names, or None."""
    if isinstance(tag, str) and tag.startswith(OCO_TAG_PREFIX) and len(tag) > len(OCO_TAG_PREFIX):
        return tag[len(OCO_TAG_PREFIX):]
    return None


#: the tag of a native bracket's entry (``bracket:<group id>``): its exits, tagged ``oco:<group id>``, go to the
#: venue together with it, and the risk engine judges them against the position this entry would open
BRACKET_TAG_PREFIX = "bracket:"
#: a native bracket's group id starts so, which lets an adapter tell its exits (``oco:<group id>``) from an
#: ordinary one-cancels-other pair even when an exit is approved, and reaches it, before the entry
NATIVE_BRACKET_ID_PREFIX = "nbk-"


def bracket_group_of(tag: str) -> str | None:
    """The native bracket an entry's ``tag`` names, or None."""
    if isinstance(tag, str) and tag.startswith(BRACKET_TAG_PREFIX) and len(tag) > len(BRACKET_TAG_PREFIX):
        return tag[len(BRACKET_TAG_PREFIX):]
    return None


def net_price_label(price: Decimal | None) -> str:
    if price is None:
        return "MKT"
    if price < 0:
        return f"{-price:.2f} CR"
    return f"{price:.2f} DB"


def instrument_from_key(key: str, multiplier: int = 100) -> Instrument:
    """Rebuild an instrument from its store key (compact OCC for options, ticker otherwise)."""
    from engine.model.instruments import is_occ_symbol

    if is_occ_symbol(key):
        return Option.from_occ(key, multiplier=multiplier)
    if key.startswith("^") or key in ("SPX", "VIX", "NDX", "RUT", "XSP"):
        return Index(key.lstrip("^"))
    return Equity(key)
