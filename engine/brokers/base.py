"""The ``Broker`` interface implemented by the paper exchange, tastytrade and IBKR.

Only the OMS's ``ModeRouter`` calls ``submit``/``cancel``/``replace`` (docs/architecture.md §4). Order status
changes and fills come back as bus events (``OrderAccepted``, ``OrderFilled``, ``OrderRejected``,
``OrderCancelled``, ``PositionChanged``, ``AccountUpdated``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from decimal import Decimal

from engine.model import AccountSnapshot, Fill, Instrument, Order, Position

#: complex (multi-leg) orders are priced in $0.01 increments whatever the legs' schedules
COMBO_TICK = Decimal("0.01")


class BrokerError(RuntimeError):
    """A broker call failed (transport, timeout or protocol); a broker *rejection* is an event instead."""


@dataclass(frozen=True, slots=True)
class OrderPreview:
    """What a broker (dry-run / whatIf) or our own estimate says an order would do."""

    buying_power_effect: Decimal | None = None  # negative = uses buying power
    commission: Decimal | None = None
    margin_change: Decimal | None = None
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    source: str = "estimate"  # estimate | broker
    raw: dict[str, str] = field(default_factory=dict)


class Broker(abc.ABC):
    #: "paper", "tastytrade", "ibkr"
    name: str = "broker"
    #: True when orders reach a real broker account (sandbox/paper ports count as live accounts)
    is_live: bool = False
    #: True when the venue takes a bracket's entry and exits together and holds the exits until the entry fills
    #: (engine/brokers/native_bracket.py); the order group manager then sends all three at once when asked to
    native_brackets: bool = False

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def disconnect(self) -> None: ...

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @property
    @abc.abstractmethod
    def account_id(self) -> str: ...

    @abc.abstractmethod
    async def submit(self, order: Order) -> None:
        """Send an order; the result arrives as events. Raises ``BrokerError`` on transport failure."""

    @abc.abstractmethod
    async def cancel(self, order: Order) -> None: ...

    @abc.abstractmethod
    async def replace(self, order: Order, limit_price: Decimal, quantity: int | None = None) -> None: ...

    @abc.abstractmethod
    async def preview(self, order: Order) -> OrderPreview: ...

    @abc.abstractmethod
    async def open_orders(self) -> list[Order]: ...

    @abc.abstractmethod
    async def positions(self) -> list[Position]: ...

    @abc.abstractmethod
    async def fills(self) -> list[Fill]: ...

    @abc.abstractmethod
    async def account(self) -> AccountSnapshot: ...

    def tick_size(self, instrument: Instrument, price: Decimal) -> Decimal:
        """The price increment this venue accepts for ``instrument`` at ``price`` (single-leg orders).

        The default is the instrument's own tick; venues with price-dependent schedules (penny pilot:
        $0.01 under $3, $0.05 above) override it so the order factory rounds as the venue validates.
        """
        return instrument.tick_size
