"""Trading state (docs/architecture.md §5) and the portfolio the risk engine checks against."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from engine.bus.events import AccountUpdated, PositionChanged
from engine.model import AccountSnapshot, Position

if TYPE_CHECKING:
    from engine.bus import Bus


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"  # normal
    REDUCING = "REDUCING"  # only orders that reduce existing positions pass
    HALTED = "HALTED"  # every new order is denied (kill-switch flatten orders excepted); cancels pass


@dataclass(frozen=True, slots=True)
class TradingStatus:
    state: TradingState
    reason: str = ""
    by: str = ""
    since: str = ""  # ISO timestamp


class PortfolioState:
    """Positions and the account snapshot of the active account, kept current from bus events.

    ``version`` bumps on every position change so cached aggregates know when to recompute.
    """

    def __init__(self, bus: Bus | None = None) -> None:
        self.positions: dict[str, Position] = {}
        self.account: AccountSnapshot | None = None
        #: when set, account updates from other brokers are ignored (a live broker streaming while in paper mode)
        self.active_broker: str | None = None
        self.version = 0
        self._subs = []
        if bus is not None:
            self._subs = [
                bus.subscribe(PositionChanged, self._on_position, name="risk.portfolio:position"),
                bus.subscribe(AccountUpdated, self._on_account, name="risk.portfolio:account"),
            ]

    def close(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()

    def _on_position(self, ev: PositionChanged) -> None:
        if self.active_broker is not None and ev.broker and ev.broker != self.active_broker:
            return  # a live broker's positions while trading paper (or the reverse) are not this portfolio
        self.apply_position(ev.position)

    def _on_account(self, ev: AccountUpdated) -> None:
        if self.active_broker is not None and ev.account.broker != self.active_broker:
            return
        self.account = ev.account

    def apply_position(self, position: Position) -> None:
        if position.quantity == 0:
            self.positions.pop(position.symbol, None)
        else:
            self.positions[position.symbol] = position
        self.version += 1

    def load(self, positions: list[Position], account: AccountSnapshot | None) -> None:
        """Replace everything (start-up, reconciliation, mode switch)."""
        self.positions = {p.symbol: p for p in positions if p.quantity != 0}
        if account is not None:
            self.account = account
        self.version += 1

    def quantity(self, symbol: str) -> int:
        p = self.positions.get(symbol)
        return p.quantity if p else 0

    @property
    def net_liquidation(self) -> float:
        return float(self.account.net_liquidation) if self.account else float("nan")

    @property
    def buying_power(self) -> float:
        return float(self.account.buying_power) if self.account else float("nan")

    @property
    def day_pnl(self) -> float:
        return float(self.account.day_pnl) if self.account else 0.0

    def equity(self) -> Decimal | None:
        return self.account.net_liquidation if self.account else None
