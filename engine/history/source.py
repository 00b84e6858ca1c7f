"""The interface a feed implements to hand the history service its own daily history.

A source answers one question: the last ``sessions`` daily rows of some underlyings strictly before a
day. It runs in an executor (it may simulate, read files or call a broker's history endpoint), so it
must not touch the event loop, the bus or the store; it returns plain arrays and the service writes
them. Brokers' history endpoints implement this same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class DailySeries:
    """One underlying's daily rows, oldest first: the close and the 30-day constant-maturity ATM IV."""

    underlying: str
    days: tuple[date, ...]
    close: np.ndarray
    atm_iv: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.days)
        if len(self.close) != n or len(self.atm_iv) != n:
            raise ValueError(f"{self.underlying}: {n} days but {len(self.close)} closes and "
                             f"{len(self.atm_iv)} ATM IVs")
        if any(b <= a for a, b in zip(self.days, self.days[1:], strict=False)):
            raise ValueError(f"{self.underlying}: days must be strictly increasing")


class HistorySource(Protocol):
    """Where backfilled history comes from (the simulated market's seeded path, a broker, a file)."""

    #: recorded with every stored row (``iv_history.source``) and in ``history_backfills``
    name: str

    def daily(self, underlyings: Sequence[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """The last ``sessions`` sessions strictly before ``before`` for each underlying it knows."""
        ...
